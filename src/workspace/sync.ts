/**
 * Imports the workspace into the database: the perspective library, and every dataset's images as
 * graphcap lays them out (src/workspace/layout.ts). Idempotent: a second run with nothing changed
 * on disk changes nothing and says so.
 */
import { realpath } from 'node:fs/promises';
import type { Db } from '../db/client.js';
import { addDatasetMembersByPath, ensureDataset, listFolderFedDatasetNames, removeDatasetMembersByPath, removeDatasetMembersNotIn } from '../db/datasets.js';
import { findImagesByPath, refreshImageMtimes, touchDatasets, upsertImages, type ImageUpsert } from '../db/images.js';
import { syncLibraryPerspectives, type PerspectiveSyncCounts } from '../db/perspectives.js';
import type { Logger } from '../logger.js';
import { UnreadableFileError } from './safe-read.js';
import { GONE, IMAGE_MAX_BYTES, isProblem, newReadBuffers, readImageMetadata, statImageFile, type FileProblem, type ImageFile, type WorkspaceLimits } from './files.js';
import { datasetOfPath, datasetSources, isValidDatasetName, listDatasetImagePaths, listDatasetNames } from './layout.js';
import { importFolderCaptions, type CaptionImportReport } from './caption-import.js';
import { LIBRARY_FILE_MAX_BYTES, loadPerspectiveLibrary, type LibraryProblem } from './library.js';


/** The caps when none are given: the settings' defaults. */
const DEFAULT_LIMITS: WorkspaceLimits = { imageMaxBytes: IMAGE_MAX_BYTES, libraryFileMaxBytes: LIBRARY_FILE_MAX_BYTES };
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
  /** Files skipped (a link out of the workspace, not a regular file, unreadable), and why. */
  problems: FileProblem[];
  /** The folders the dataset's files were looked for in (what a watcher watches). */
  folders: string[];
  /** The captions of graphcap's captions.jsonl files beside the images (src/workspace/caption-import.ts). */
  captions: CaptionImportReport;
}

export interface SyncReport {
  perspectives: PerspectiveSyncCounts & { problems: LibraryProblem[] };
  datasets: DatasetSyncReport[];
}

export async function syncPerspectives(db: Db, root: string, limits = DEFAULT_LIMITS): Promise<SyncReport['perspectives']> {
  const { perspectives, problems, libraryFound } = await loadPerspectiveLibrary(root, limits.libraryFileMaxBytes);
  const counts = await db.transaction((tx) =>
    syncLibraryPerspectives(tx, perspectives, { removals: libraryFound, skippedFiles: problems.map((p) => p.file) }),
  );
  return { ...counts, problems };
}

/** Files a scan stats, hashes and writes at a time: memory stays at one batch, whatever the folder holds. */
const SCAN_BATCH = 1000;
/** Files hashed at once (reads overlap; libuv runs four at a time by default). */
const READ_CONCURRENCY = 4;

/**
 * Registers the image files among `candidates` (workspace-relative): a thousand at a time, stat
 * them, look up their rows, hash only new or touched files (one pass over each, outside any
 * transaction), write the batch's image rows in two statements. Returns the files found (in the
 * order given), those whose content changed, and those skipped with why.
 */
export async function registerFiles(
  db: Db,
  root: string,
  candidates: readonly string[],
  limits = DEFAULT_LIMITS,
): Promise<{ present: string[]; contentChanged: string[]; problems: FileProblem[] }> {
  const realRoot = await realpath(root);
  const problems: FileProblem[] = [];
  const readBuffers = Array.from({ length: READ_CONCURRENCY }, newReadBuffers);
  const present: string[] = [];
  const contentChanged: string[] = [];
  for (let start = 0; start < candidates.length; start += SCAN_BATCH) {
    const files: ImageFile[] = [];
    for (const f of await Promise.all(candidates.slice(start, start + SCAN_BATCH).map((p) => statImageFile(realRoot, p, limits.imageMaxBytes)))) {
      if (isProblem(f)) problems.push(f);
      else files.push(f);
    }
    const known = new Map((await findImagesByPath(db, files.map((f) => f.path))).map((r) => [r.path, r]));
    const touched = files.filter((f) => {
      const row = known.get(f.path);
      return !row || row.sizeBytes !== f.sizeBytes || row.fileMtime?.getTime() !== f.mtime.getTime();
    });
    // A file changed between the stat and the read (swapped for a FIFO, deleted) is one problem, not the scan's end.
    const metadata = await mapConcurrently(touched, readBuffers, (f, buffers) =>
      readImageMetadata(f.real, buffers, limits.imageMaxBytes).catch((error: NodeJS.ErrnoException): FileProblem => ({
        path: f.path,
        message: error instanceof UnreadableFileError ? error.message : error.code === 'ENOENT' ? GONE : `cannot be read (${error.code ?? 'error'})`,
      })),
    );
    const refreshed: { id: string; fileMtime: Date }[] = [];
    const written: ImageUpsert[] = [];
    const unread = new Set<string>();
    touched.forEach((file, i) => {
      const meta = metadata[i]!;
      if ('message' in meta) {
        problems.push(meta);
        unread.add(file.path);
        return;
      }
      const row = known.get(file.path);
      if (row && row.contentHash === meta.contentHash) {
        refreshed.push({ id: row.id, fileMtime: file.mtime });
      } else {
        written.push({ path: file.path, sizeBytes: file.sizeBytes, fileMtime: file.mtime, ...meta });
        if (row) contentChanged.push(file.path);
      }
    });
    await refreshImageMtimes(db, refreshed);
    await upsertImages(db, written);
    for (const f of files) if (!unread.has(f.path)) present.push(f.path);
  }
  return { present, contentChanged, problems };
}

/**
 * Brings the given paths up to date, and nothing else (a watcher's events, a job naming a file
 * just copied in): files that are there are registered (hashed when new or touched) and put in the
 * dataset graphcap's layout gives them; those that are gone leave it. Returns the files registered
 * (there), the dataset members added and removed, and the files skipped with why.
 */
export async function syncPaths(
  db: Db,
  root: string,
  paths: readonly string[],
  limits = DEFAULT_LIMITS,
): Promise<{ registered: string[]; added: string[]; removed: string[]; problems: FileProblem[] }> {
  const unique = [...new Set(paths)];
  const { present, problems } = await registerFiles(db, root, unique, limits);
  const there = new Set(present);
  const gone = new Set(problems.filter((x) => x.message === GONE).map((x) => x.path));
  const added: string[] = [];
  const removed: string[] = [];
  const byDataset = new Map<string, { present: string[]; gone: string[] }>();
  for (const p of unique) {
    const name = datasetOfPath(p);
    if (!name) continue;
    const entry = byDataset.get(name) ?? { present: [], gone: [] };
    if (there.has(p)) entry.present.push(p);
    else if (gone.has(p)) entry.gone.push(p);
    byDataset.set(name, entry);
  }
  if (byDataset.size === 0) return { registered: present, added, removed, problems };
  await db.transaction(async (tx) => {
    for (const [name, { present: files, gone }] of byDataset) {
      const datasetId = await ensureDataset(tx, name);
      const newMembers = await addDatasetMembersByPath(tx, datasetId, files);
      const left = await removeDatasetMembersByPath(tx, datasetId, gone);
      added.push(...newMembers);
      removed.push(...left);
      if (newMembers.length + left.length > 0) await touchDatasets(tx, [datasetId]);
    }
  });
  return { registered: present, added, removed, problems: problems.filter((x) => x.message !== GONE) };
}

/**
 * Scans the dataset `name`'s folders (one that is gone counts as empty). Only members in them are
 * the scan's to remove: images added to the dataset from elsewhere through the API stay.
 *
 * The files are registered a thousand at a time (registerFiles), then one transaction changes the
 * dataset's membership. Only the folder's paths are held throughout (the report names them).
 */
export async function syncDataset(db: Db, root: string, name: string, limits = DEFAULT_LIMITS): Promise<DatasetSyncReport> {
  const { paths: candidates, folders, unreadable, emptyFolder } = await listDatasetImagePaths(root, name);
  const { present, contentChanged, problems } = await registerFiles(db, root, candidates, limits);
  // A folder it could not read, or one suddenly empty (an unmounted volume), says nothing of what is
  // gone: the members stay, and the report says why.
  const distrust = unreadable.length > 0 || (emptyFolder && present.length === 0);

  const report = await db.transaction(async (tx) => {
    const datasetId = await ensureDataset(tx, name);
    const added = new Set(await addDatasetMembersByPath(tx, datasetId, present));
    const { removed, kept } = await removeDatasetMembersNotIn(tx, datasetId, datasetSources(name), present, { keep: distrust });
    for (const { folder, code } of unreadable) problems.push({ path: folder, message: `cannot be read (${code}): its members are kept` });
    if (kept > 0 && unreadable.length === 0) {
      problems.push({ path: folders[0] ?? `datasets/${name}`, message: `empty while ${kept} members came from it (an unmounted volume?): they are kept` });
    }
    const report: DatasetSyncReport = {
      name,
      datasetId,
      added: 0,
      updated: 0,
      removed: removed.length,
      unchanged: 0,
      changes: {
        // New to the dataset counts as added, whether its image row is new or not.
        added: added.size > 0 ? present.filter((p) => added.has(p)) : [],
        updated: contentChanged.filter((p) => !added.has(p)),
        removed,
      },
      problems,
      folders,
      captions: { files: 0, read: 0, imported: 0, problems: [] },
    };
    report.added = report.changes.added.length;
    report.updated = report.changes.updated.length;
    report.unchanged = present.length - report.added - report.updated;
    if (report.added + report.updated + report.removed > 0) await touchDatasets(tx, [datasetId]);
    return report;
  });
  // After the images: a caption needs its image registered.
  report.captions = await importFolderCaptions(db, root, folders);
  return report;
}

/** `fn` over `items`, one worker per element of `workers` (each passed to its calls); results in order. */
async function mapConcurrently<T, W, R>(items: T[], workers: W[], fn: (item: T, worker: W) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const work = async (worker: W) => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!, worker);
    }
  };
  await Promise.all(workers.slice(0, items.length).map(work));
  return results;
}

export async function syncWorkspace(db: Db, root: string, logger?: Logger, limits = DEFAULT_LIMITS): Promise<SyncReport> {
  const perspectives = await syncPerspectives(db, root, limits);
  for (const problem of perspectives.problems) logger?.warn(problem, 'skipped perspective file');
  // Datasets on disk, and those folders fed before (folders that are gone empty them).
  const names = new Set([...(await listDatasetNames(root)), ...(await listFolderFedDatasetNames(db)).filter(isValidDatasetName)]);
  const datasets: DatasetSyncReport[] = [];
  for (const name of [...names].sort()) datasets.push(await syncDataset(db, root, name, limits));
  logger?.info(
    {
      perspectives: {
        added: perspectives.added,
        updated: perspectives.updated,
        unchanged: perspectives.unchanged,
        removed: perspectives.removed,
      },
      datasets: datasets.map(({ name, added, updated, removed, unchanged, problems, captions }) => ({
        name,
        added,
        updated,
        removed,
        unchanged,
        skipped: problems.length,
        captions: { files: captions.files, read: captions.read, imported: captions.imported, problems: captions.problems.length },
      })),
    },
    'workspace synced',
  );
  for (const d of datasets) {
    for (const problem of d.problems.slice(0, 20)) logger?.warn({ dataset: d.name, ...problem }, 'skipped workspace file');
    for (const problem of d.captions.problems.slice(0, 20)) logger?.warn({ dataset: d.name, ...problem }, 'skipped caption line');
  }
  return { perspectives, datasets };
}
