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
 * Writes `lines` (oldest first: a later line of an image wins) into `file`, the captions of
 * `perspective` for the images of the workspace folder `folder`.
 */
export async function writeCaptionLines(file: string, folder: string, perspective: string, lines: readonly LineToWrite[]): Promise<WriteOutcome> {
  await mkdir(path.dirname(file), { recursive: true });
  await removeLeftovers(file);
  let text = await readFile(file, 'utf8').catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return '';
    throw error;
  });
  const repaired = text.length > 0 && !text.endsWith('\n');
  if (repaired) text = text.slice(0, text.lastIndexOf('\n') + 1);
  const all = text ? text.slice(0, -1).split('\n') : [];
  const before = all.length;
  const keys = new Set<string>();
  const lineOf = new Map<string, number>();
  all.forEach((raw, i) => {
    const entry = parseCaptionLine(raw);
    if ('problem' in entry) return;
    const name = path.posix.basename(entry.filename);
    if (!lineOf.has(name)) lineOf.set(name, i);
    keys.add(captionKey(`${folder}/${name}`, perspective, entry));
  });
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
      lineOf.set(l.filename, all.length);
      all.push(l.line);
    } else {
      if (at < before) outcome.replaced += 1;
      all[at] = l.line;
    }
  }
  if (repaired || outcome.replaced > 0) await replaceFile(file, `${all.join('\n')}\n`);
  else if (all.length > before) await appendToFile(file, `${all.slice(before).join('\n')}\n`);
  const info = await stat(file).catch(() => undefined);
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
