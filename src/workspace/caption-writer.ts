/**
 * Writes caption lines into one of graphcap's captions.jsonl files, safely against a crash at any
 * point: a line already in the file (the same key: a write whose mark did not reach the database)
 * is not written again; a line cut short by a crash mid-append is dropped and rewritten; a new
 * caption of an image that has a line replaces it in place (graphcap's Media Server shows an image's
 * first line), through a temporary file renamed over the old one, so a reader sees the old file or
 * the new one, never half of either. New images' lines are appended, one write and one fsync.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { captionKey, parseCaptionLine } from './caption-files.js';

export interface LineToWrite {
  /** captionKey of the line's caption. */
  key: string;
  /** The image's file name. */
  filename: string;
  /** The whole line, without its newline (formatCaptionLine). */
  line: string;
}

export interface WriteOutcome {
  written: number;
  /** Lines that were in the file already (an earlier write not yet marked). */
  alreadyThere: number;
  /** Of the written, those that replaced an image's line. */
  replaced: number;
  /** A line cut short (a crash mid-append) was dropped. */
  repaired: boolean;
  sizeBytes: number;
  mtime: Date;
}

/**
 * What a file held when this process last read or wrote it: the keys of its lines and the line of
 * each image, so that appending to it again needs no read. Trusted only while the file's size,
 * modification time and inode are those seen then: anyone else's write changes them.
 */
interface FileIndex {
  size: number;
  mtimeMs: number;
  ino: number;
  lineCount: number;
  keys: Set<string>;
  lineOf: Map<string, number>;
}

/**
 * The indexes of the files written last (a few: a job writes a folder's files over and over).
 * Without it each write read and parsed the whole file again: a job over a folder of 100,000 images
 * parsed its file ~200 times.
 */
export class CaptionFileIndexes {
  private readonly entries = new Map<string, FileIndex>();

  constructor(private readonly max = 16) {}

  /** The index of `file` if it still describes the file; taken out either way (put back after a write). */
  take(file: string, info: { size: number; mtimeMs: number; ino: number } | undefined): FileIndex | undefined {
    const index = this.entries.get(file);
    this.entries.delete(file);
    if (!index || !info || index.size !== info.size || index.mtimeMs !== info.mtimeMs || index.ino !== info.ino) return undefined;
    return index;
  }

  put(file: string, index: FileIndex): void {
    this.entries.set(file, index);
    if (this.entries.size > this.max) this.entries.delete(this.entries.keys().next().value!);
  }
}

/** A file read: its complete lines, and what it was cut short of (a crash mid-append). */
interface FileRead {
  lines: string[];
  repaired: boolean;
  keys: Set<string>;
  lineOf: Map<string, number>;
}

async function readCaptionFile(file: string, folder: string, perspective: string): Promise<FileRead> {
  let text = await readFile(file, 'utf8').catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return '';
    throw error;
  });
  const repaired = text.length > 0 && !text.endsWith('\n');
  if (repaired) text = text.slice(0, text.lastIndexOf('\n') + 1);
  const lines = text ? text.slice(0, -1).split('\n') : [];
  const keys = new Set<string>();
  const lineOf = new Map<string, number>();
  lines.forEach((raw, i) => {
    const entry = parseCaptionLine(raw);
    if ('problem' in entry) return;
    const name = path.posix.basename(entry.filename);
    if (!lineOf.has(name)) lineOf.set(name, i);
    keys.add(captionKey(`${folder}/${name}`, perspective, entry));
  });
  return { lines, repaired, keys, lineOf };
}

/**
 * Writes `lines` (oldest first: a later line of an image wins) into `file`, the captions of
 * `perspective` for the images of the workspace folder `folder`. With `indexes`, a file this
 * process wrote last, unchanged since, is appended to without being read again.
 */
export async function writeCaptionLines(
  file: string,
  folder: string,
  perspective: string,
  lines: readonly LineToWrite[],
  indexes?: CaptionFileIndexes,
): Promise<WriteOutcome> {
  await mkdir(path.dirname(file), { recursive: true });
  await removeLeftovers(file);
  const known = indexes?.take(file, await stat(file).catch(() => undefined));
  // A line replaced in place needs the whole file: read it then, as when nothing is known of it.
  const replaces = (keys: Set<string>, lineOf: Map<string, number>) => lines.some((l) => !keys.has(l.key) && lineOf.has(l.filename));
  const read = known && !replaces(known.keys, known.lineOf) ? undefined : await readCaptionFile(file, folder, perspective);
  const keys = read?.keys ?? known!.keys;
  const lineOf = read?.lineOf ?? known!.lineOf;
  const before = read?.lines.length ?? known!.lineCount;
  const repaired = read?.repaired ?? false;
  const appended: string[] = [];
  const outcome = { written: 0, alreadyThere: 0, replaced: 0, repaired };
  for (const l of lines) {
    if (keys.has(l.key)) {
      outcome.alreadyThere += 1;
      continue;
    }
    keys.add(l.key);
    outcome.written += 1;
    const at = lineOf.get(l.filename);
    if (at === undefined) {
      lineOf.set(l.filename, before + appended.length);
      appended.push(l.line);
    } else if (at >= before) {
      appended[at - before] = l.line;
    } else {
      outcome.replaced += 1;
      read!.lines[at] = l.line;
    }
  }
  if (repaired || outcome.replaced > 0) await replaceFile(file, `${[...read!.lines, ...appended].join('\n')}\n`);
  else if (appended.length > 0) await appendToFile(file, `${appended.join('\n')}\n`);
  const info = await stat(file).catch(() => undefined);
  if (info && indexes) indexes.put(file, { size: info.size, mtimeMs: info.mtimeMs, ino: info.ino, lineCount: before + appended.length, keys, lineOf });
  return { ...outcome, sizeBytes: info?.size ?? 0, mtime: info?.mtime ?? new Date(0) };
}

/** Temporary files of a replace that a crash cut short: never the file itself, so they go. */
async function removeLeftovers(file: string): Promise<void> {
  const name = path.basename(file);
  for (const entry of await readdir(path.dirname(file))) {
    if (entry.startsWith(`${name}.`) && /\.\d+\.[0-9a-f]{8}\.tmp$/.test(entry)) await unlink(path.join(path.dirname(file), entry)).catch(() => {});
  }
}

/** One write at the end of the file, flushed to disk before it counts as done. */
async function appendToFile(file: string, text: string): Promise<void> {
  const handle = await open(file, 'a');
  try {
    await handle.write(text);
    await handle.datasync();
  } finally {
    await handle.close();
  }
}

/** The whole file anew: written beside it, flushed, renamed over it, and the rename flushed. */
async function replaceFile(file: string, text: string): Promise<void> {
  const temporary = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const handle = await open(temporary, 'w');
  try {
    await handle.write(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(temporary, file);
  const folder = await open(path.dirname(file), 'r');
  try {
    await folder.sync();
  } finally {
    await folder.close();
  }
}
