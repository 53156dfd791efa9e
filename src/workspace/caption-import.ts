/**
 * Imports the captions graphcap already has, from the captions.jsonl files beside a dataset's
 * images (src/workspace/caption-files.ts): each line becomes a caption of the image of that name in
 * the folder, for the perspective its batch folder names (or its config_name, where the folder is
 * not a perspective), with its model, provider and version. A line is imported once; a changed line
 * is a new caption, the newest. Files unchanged since they were read are not read again.
 */
import path from 'node:path';
import type { Db } from '../db/client.js';
import { importCaptions, perspectiveNames, recordCaptionFiles, unchangedCaptionFiles, type ImportedCaption } from '../db/caption-imports.js';
import { captionKey, findCaptionFiles, readCaptionLines, type CaptionFile } from './caption-files.js';

export interface CaptionImportProblem {
  /** Workspace-relative path of the captions file. */
  file: string;
  /** The line, from 1; none for a problem of the whole file. */
  line?: number;
  message: string;
}

export interface CaptionImportReport {
  /** captions.jsonl files found beside the dataset's images. */
  files: number;
  /** Of which read (new or changed since the last import). */
  read: number;
  /** Captions stored (lines not imported before). */
  imported: number;
  /** Lines skipped (not a caption, no such image, no such perspective), at most a few per file. */
  problems: CaptionImportProblem[];
}

/** Captions stored per statement. */
const BATCH = 1000;
/** Problems reported per file: the report stays small whatever a broken file holds. */
const PROBLEMS_PER_FILE = 20;
/**
 * Files imported at once. Reading a file and storing its captions are about even in time (the
 * service's CPU, the database's): two at a time keep both busy where one left each idle half the time.
 */
const FILES_AT_ONCE = 2;

export async function importFolderCaptions(db: Db, root: string, folders: readonly string[]): Promise<CaptionImportReport> {
  const files = await findCaptionFiles(root, folders);
  const unchanged = await unchangedCaptionFiles(db, files);
  const known = await perspectiveNames(db);
  const report: CaptionImportReport = { files: files.length, read: 0, imported: 0, problems: [] };
  const todo = files.filter((f) => !unchanged.has(f.path));
  const results = new Array<{ imported: number; problems: CaptionImportProblem[] }>(todo.length);
  let next = 0;
  const worker = async () => {
    while (next < todo.length) {
      const i = next++;
      const file = todo[i]!;
      results[i] = await importFile(db, root, file, known);
      // Only once its captions are stored: a crash before this reads the file again next time.
      await recordCaptionFiles(db, [file]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(FILES_AT_ONCE, todo.length) }, worker));
  for (const r of results) {
    report.read += 1;
    report.imported += r.imported;
    report.problems.push(...r.problems);
  }
  return report;
}

async function importFile(db: Db, root: string, file: CaptionFile, known: Set<string>): Promise<{ imported: number; problems: CaptionImportProblem[] }> {
  const problems: CaptionImportProblem[] = [];
  const problem = (p: Omit<CaptionImportProblem, 'file'>) => {
    if (problems.length < PROBLEMS_PER_FILE) problems.push({ file: file.path, ...p });
  };
  let imported = 0;
  let pending: (ImportedCaption & { line: number })[] = [];
  const store = async (batch: typeof pending) => {
    const result = await importCaptions(db, batch.map(({ line: _line, ...c }) => c));
    imported += result.imported;
    const missing = new Set(result.missing);
    for (const c of batch) if (missing.has(c.imagePath)) problem({ line: c.line, message: `no image ${c.imagePath} (gone, or not registered)` });
  };
  // One batch is stored while the next is read; batches are stored in their order (a later line wins).
  let storing: Promise<void> = Promise.resolve();
  const flush = async () => {
    const batch = pending;
    pending = [];
    await storing;
    storing = store(batch);
    storing.catch(() => undefined);
  };
  await readCaptionLines(path.join(root, file.path), async (entry, line) => {
    if ('problem' in entry) return problem({ line, message: entry.problem });
    const perspective = known.has(file.batch) ? file.batch : entry.configName !== null && known.has(entry.configName) ? entry.configName : undefined;
    if (!perspective) {
      return problem({ line, message: `no perspective ${file.batch}${entry.configName ? ` or ${entry.configName}` : ''}` });
    }
    const imagePath = `${file.folder}/${path.posix.basename(entry.filename)}`;
    pending.push({
      line,
      imagePath,
      perspective,
      version: entry.version,
      model: entry.model,
      provider: entry.provider,
      result: entry.parsed,
      key: captionKey(imagePath, perspective, entry),
    });
    if (pending.length >= BATCH) await flush();
  });
  await flush();
  await storing;
  problems.sort((a, b) => (a.line ?? 0) - (b.line ?? 0));
  return { imported, problems };
}
