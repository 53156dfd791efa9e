/**
 * Imports the workspace into the database: the perspective library, and every dataset folder's
 * images. Idempotent: a second run with nothing changed on disk changes nothing and says so.
 */
import path from 'node:path';
import type { Db } from './db/client.js';
import { addDatasetMembers, ensureDataset, listDatasetMembers, removeDatasetMembers } from './db/datasets.js';
import { findImagesByPath, upsertImage } from './db/images.js';
import { upsertPerspectives, type UpsertCounts } from './db/perspectives.js';
import type { Logger } from './logger.js';
import {
  listDatasetFolders,
  listDatasetImages,
  loadPerspectiveLibrary,
  readImageMetadata,
  type LibraryProblem,
} from './workspace.js';

export interface DatasetSyncReport {
  name: string;
  datasetId: string;
  /** Files registered for the first time (or newly added to this dataset). */
  added: number;
  /** Files whose content changed since the last scan. */
  updated: number;
  /** Members whose file is gone; they leave the dataset, their image rows and captions stay. */
  removed: number;
  unchanged: number;
}

export interface SyncReport {
  perspectives: UpsertCounts & { problems: LibraryProblem[] };
  datasets: DatasetSyncReport[];
}

export async function syncPerspectives(db: Db, root: string): Promise<SyncReport['perspectives']> {
  const { perspectives, problems } = await loadPerspectiveLibrary(root);
  const counts = await db.transaction((tx) => upsertPerspectives(tx, perspectives));
  return { ...counts, problems };
}

export async function syncDataset(db: Db, root: string, name: string): Promise<DatasetSyncReport> {
  const files = await listDatasetImages(root, name);
  // Hashing reads whole files: do it before the transaction, and only for new or touched files.
  const known = new Map((await findImagesByPath(db, files.map((f) => f.path))).map((r) => [r.path, r]));
  const touched = files.filter((f) => {
    const row = known.get(f.path);
    return !row || row.sizeBytes !== f.sizeBytes || row.fileMtime?.getTime() !== f.mtime.getTime();
  });
  const metadata = new Map<string, Awaited<ReturnType<typeof readImageMetadata>>>();
  for (const file of touched) metadata.set(file.path, await readImageMetadata(path.join(root, file.path)));

  return db.transaction(async (tx) => {
    const datasetId = await ensureDataset(tx, name);
    const members = new Map((await listDatasetMembers(tx, datasetId)).map((m) => [m.path, m.imageId]));
    const report: DatasetSyncReport = { name, datasetId, added: 0, updated: 0, removed: 0, unchanged: 0 };
    const newMembers: string[] = [];
    for (const file of files) {
      const meta = metadata.get(file.path);
      const row = known.get(file.path);
      let imageId = row?.id;
      if (meta) {
        imageId = await upsertImage(tx, { path: file.path, sizeBytes: file.sizeBytes, fileMtime: file.mtime, ...meta });
      }
      if (!members.has(file.path)) {
        newMembers.push(imageId!);
        report.added += 1;
      } else if (meta && row && row.contentHash !== meta.contentHash) {
        report.updated += 1;
      } else {
        report.unchanged += 1;
      }
    }
    await addDatasetMembers(tx, datasetId, newMembers);
    const present = new Set(files.map((f) => f.path));
    const gone = [...members].filter(([p]) => !present.has(p)).map(([, id]) => id);
    await removeDatasetMembers(tx, datasetId, gone);
    report.removed = gone.length;
    return report;
  });
}

export async function syncWorkspace(db: Db, root: string, logger?: Logger): Promise<SyncReport> {
  const perspectives = await syncPerspectives(db, root);
  for (const problem of perspectives.problems) logger?.warn(problem, 'skipped perspective file');
  const datasets: DatasetSyncReport[] = [];
  for (const name of await listDatasetFolders(root)) datasets.push(await syncDataset(db, root, name));
  logger?.info(
    {
      perspectives: { added: perspectives.added, updated: perspectives.updated, unchanged: perspectives.unchanged },
      datasets: datasets.map(({ name, added, updated, removed, unchanged }) => ({ name, added, updated, removed, unchanged })),
    },
    'workspace synced',
  );
  return { perspectives, datasets };
}
