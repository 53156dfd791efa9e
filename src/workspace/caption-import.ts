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

export async function importFolderCaptions(db: Db, root: string, folders: readonly string[]): Promise<CaptionImportReport> {
  const files = await findCaptionFiles(root, folders);
  const unchanged = await unchangedCaptionFiles(db, files);
  const known = await perspectiveNames(db);
  const report: CaptionImportReport = { files: files.length, read: 0, imported: 0, problems: [] };
  for (const file of files) {
    if (unchanged.has(file.path)) continue;
    report.read += 1;
    const { imported, problems } = await importFile(db, root, file, known);
    report.imported += imported;
    report.problems.push(...problems);
    await recordCaptionFiles(db, [file]);
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
  const flush = async () => {
    const result = await importCaptions(db, pending.map(({ line: _line, ...c }) => c));
    imported += result.imported;
    const missing = new Set(result.missing);
    for (const c of pending) if (missing.has(c.imagePath)) problem({ line: c.line, message: `no image ${c.imagePath} (gone, or not registered)` });
    pending = [];
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
  return { imported, problems };
}
