/**
 * Imports the workspace into the database: the perspective library, and every dataset folder's
 * images. Idempotent: a second run with nothing changed on disk changes nothing and says so.
 */
import path from 'node:path';
import type { Db } from './db/client.js';
import {
  addDatasetMembers,
  ensureDataset,
  listDatasetMembers,
  listFolderFedDatasetNames,
  removeDatasetMembers,
} from './db/datasets.js';
import { findImagesByPath, refreshImageMtime, touchDatasets, upsertImage } from './db/images.js';
import { syncLibraryPerspectives, type PerspectiveSyncCounts } from './db/perspectives.js';
import type { Logger } from './logger.js';
import {
  isValidDatasetName,
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
  /** Files whose content changed since the last scan (metadata re-read). */
  updated: number;
  /** Members whose file is gone; they leave the dataset, their image rows and captions stay. */
  removed: number;
  unchanged: number;
  /** The paths behind the counts. */
  changes: { added: string[]; updated: string[]; removed: string[] };
}

export interface SyncReport {
  perspectives: PerspectiveSyncCounts & { problems: LibraryProblem[] };
  datasets: DatasetSyncReport[];
}

export async function syncPerspectives(db: Db, root: string): Promise<SyncReport['perspectives']> {
  const { perspectives, problems, libraryFound } = await loadPerspectiveLibrary(root);
  const counts = await db.transaction((tx) =>
    syncLibraryPerspectives(tx, perspectives, { removals: libraryFound, skippedFiles: problems.map((p) => p.file) }),
  );
  return { ...counts, problems };
}

/**
 * Scans `datasets/<name>/` (a folder that is gone counts as empty). Only members under that folder
 * are the scan's to remove: images added to the dataset from elsewhere through the API stay.
 */
export async function syncDataset(db: Db, root: string, name: string): Promise<DatasetSyncReport> {
  const folder = `datasets/${name}/`;
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
    const members = new Map((await listDatasetMembers(tx, datasetId, folder)).map((m) => [m.path, m.imageId]));
    const report: DatasetSyncReport = {
      name,
      datasetId,
      added: 0,
      updated: 0,
      removed: 0,
      unchanged: 0,
      changes: { added: [], updated: [], removed: [] },
    };
    const newMembers: string[] = [];
    for (const file of files) {
      const meta = metadata.get(file.path);
      const row = known.get(file.path);
      let imageId = row?.id;
      let contentChanged = false;
      if (meta && row && row.contentHash === meta.contentHash) {
        await refreshImageMtime(tx, row.id, file.mtime);
      } else if (meta) {
        imageId = await upsertImage(tx, { path: file.path, sizeBytes: file.sizeBytes, fileMtime: file.mtime, ...meta });
        contentChanged = row !== undefined;
      }
      if (!members.has(file.path)) {
        newMembers.push(imageId!);
        report.changes.added.push(file.path);
      } else if (contentChanged) {
        report.changes.updated.push(file.path);
      } else {
        report.unchanged += 1;
      }
    }
    await addDatasetMembers(tx, datasetId, newMembers);
    const present = new Set(files.map((f) => f.path));
    const gone = [...members].filter(([p]) => !present.has(p)).sort(([a], [b]) => (a < b ? -1 : 1));
    await removeDatasetMembers(tx, datasetId, gone.map(([, id]) => id));
    report.changes.removed = gone.map(([p]) => p);
    report.added = report.changes.added.length;
    report.updated = report.changes.updated.length;
    report.removed = report.changes.removed.length;
    if (report.added + report.updated + report.removed > 0) await touchDatasets(tx, [datasetId]);
    return report;
  });
}

export async function syncWorkspace(db: Db, root: string, logger?: Logger): Promise<SyncReport> {
  const perspectives = await syncPerspectives(db, root);
  for (const problem of perspectives.problems) logger?.warn(problem, 'skipped perspective file');
  // Folders on disk, and datasets whose folder fed them before (a folder that is gone empties them).
  const names = new Set([...(await listDatasetFolders(root)), ...(await listFolderFedDatasetNames(db)).filter(isValidDatasetName)]);
  const datasets: DatasetSyncReport[] = [];
  for (const name of [...names].sort()) datasets.push(await syncDataset(db, root, name));
  logger?.info(
    {
      perspectives: {
        added: perspectives.added,
        updated: perspectives.updated,
        unchanged: perspectives.unchanged,
        removed: perspectives.removed,
      },
      datasets: datasets.map(({ name, added, updated, removed, unchanged }) => ({ name, added, updated, removed, unchanged })),
    },
    'workspace synced',
  );
  return { perspectives, datasets };
}
