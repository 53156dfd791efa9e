/**
 * graphcap's caption files: `<image folder>/analysis/batch_<perspective>/captions.jsonl`, one JSON
 * object per line and image: `filename` ("./x.jpg", matched by base name), `config_name`, `version`,
 * `model`, `provider`, `parsed` (the caption). Finding them, reading them line by line, and writing
 * lines graphcap's own tools (Python's json.dumps) would write.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import path from 'node:path';
import { canonicalJson } from './library.js';
import { ANALYSIS } from './layout.js';

export const CAPTIONS_FILE = 'captions.jsonl';
const BATCH = 'batch_';

/** A captions.jsonl of the workspace, as found. */
export interface CaptionFile {
  /** Workspace-relative path of the file. */
  path: string;
  /** The folder of the images it describes. */
  folder: string;
  /** What its batch_<name> folder names (a perspective, or a config whose lines name theirs). */
  batch: string;
  sizeBytes: number;
  mtime: Date;
}

/** One line of a captions.jsonl. */
export interface CaptionEntry {
  filename: string;
  configName: string | null;
  version: string | null;
  model: string | null;
  provider: string | null;
  parsed: Record<string, unknown>;
}

/** The file of the captions of `perspective` for images in `folder`. */
export const captionFileOf = (folder: string, perspective: string) => `${folder}/${ANALYSIS}/${BATCH}${perspective}/${CAPTIONS_FILE}`;

/** The captions.jsonl files beside the images of `folders` (workspace-relative). */
export async function findCaptionFiles(root: string, folders: readonly string[]): Promise<CaptionFile[]> {
  const found: CaptionFile[] = [];
  for (const folder of folders) {
    const analysis = path.join(root, folder, ANALYSIS);
    const batches = (await readdir(analysis, { withFileTypes: true }).catch(() => [])).filter((e) => e.isDirectory() && e.name.startsWith(BATCH));
    for (const batch of batches) {
      const relative = `${folder}/${ANALYSIS}/${batch.name}/${CAPTIONS_FILE}`;
      const info = await stat(path.join(root, relative)).catch(() => undefined);
      if (!info?.isFile()) continue;
      found.push({ path: relative, folder, batch: batch.name.slice(BATCH.length), sizeBytes: info.size, mtime: info.mtime });
    }
  }
  return found.sort((a, b) => (a.path < b.path ? -1 : 1));
}

/** One line of a captions.jsonl read, or why it is not a caption line. */
export function parseCaptionLine(raw: string): CaptionEntry | { problem: string } {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return { problem: 'not JSON' };
  }
  const v = value as Record<string, unknown>;
  if (typeof v !== 'object' || v === null || typeof v.filename !== 'string' || !v.filename.trim()) return { problem: 'no filename' };
  if (typeof v.parsed !== 'object' || v.parsed === null || Array.isArray(v.parsed)) return { problem: 'no parsed caption object' };
  const text = (key: string) => (typeof v[key] === 'string' || typeof v[key] === 'number' ? String(v[key]) : null);
  return {
    filename: v.filename,
    configName: text('config_name'),
    version: text('version'),
    model: text('model'),
    provider: text('provider'),
    parsed: v.parsed as Record<string, unknown>,
  };
}

/** Reads a captions.jsonl line by line (memory stays at a line), calling `each` with its number (from 1). */
export async function readCaptionLines(file: string, each: (entry: CaptionEntry | { problem: string }, line: number) => Promise<void> | void): Promise<void> {
  const lines = createInterface({ input: createReadStream(file, { encoding: 'utf8' }), crlfDelay: Infinity });
  let n = 0;
  for await (const raw of lines) {
    n += 1;
    if (raw.trim()) await each(parseCaptionLine(raw), n);
  }
}

/**
 * The line for a caption, byte for byte as graphcap's Python writes them (json.dumps: ", " and ": "
 * separators, non-ASCII escaped), key order filename, config_name, version, model, provider, parsed.
 */
export function formatCaptionLine(entry: CaptionEntry): string {
  return pythonJson({
    filename: `./${path.posix.basename(entry.filename)}`,
    config_name: entry.configName,
    version: entry.version,
    model: entry.model,
    provider: entry.provider,
    parsed: entry.parsed,
  });
}

/**
 * What makes a line the same caption: its image, perspective and content. A line already imported
 * (or written from a caption here) has a caption with this key, and is not imported again.
 */
export function captionKey(imagePath: string, perspective: string, entry: Pick<CaptionEntry, 'version' | 'model' | 'provider' | 'parsed'>): string {
  const identity = [imagePath, perspective, entry.version, entry.model, entry.provider, entry.parsed];
  return createHash('sha256').update(canonicalJson(identity)).digest('hex');
}

/** JSON as Python's json.dumps writes it by default. */
function pythonJson(value: unknown): string {
  if (value === null || value === undefined) return 'null';
  if (typeof value === 'string') return JSON.stringify(value).replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  if (typeof value === 'number' || typeof value === 'boolean') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(pythonJson).join(', ')}]`;
  return `{${Object.entries(value as Record<string, unknown>)
    .map(([k, v]) => `${pythonJson(k)}: ${pythonJson(v)}`)
    .join(', ')}}`;
}
