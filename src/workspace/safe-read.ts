/**
 * Reading a small file of the workspace (a perspective definition, the module settings) without
 * trusting it: it must resolve inside the workspace, be a regular file when opened (a FIFO would
 * block a file-I/O thread until every file operation of the service times out; /dev/zero would be
 * read forever), and be at most `maxBytes`. Opened first, then checked on the descriptor, so a swap
 * between the check and the read changes nothing.
 */
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { InvalidInputError } from '../errors.js';
import { resolveInWorkspace } from './paths.js';

/** A file the workspace should not have handed us; its message says why, for the sync report. */
export class UnreadableFileError extends Error {
  override name = 'UnreadableFileError';
}

/** Opens without following a final link (resolveInWorkspace resolved them) and without blocking on a FIFO. */
const FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

/**
 * Opens `real` (a path with its links resolved) for reading, then checks the descriptor: a regular
 * file of at most `maxBytes`, else UnreadableFileError (`tooBig` says why for a big one). Returns
 * the handle, which the caller closes, and the size it had when opened.
 */
export async function openRegularFile(
  real: string,
  maxBytes: number,
  tooBig: (size: number) => string,
): Promise<{ handle: FileHandle; size: number }> {
  const handle = await open(real, FLAGS);
  try {
    const info = await handle.stat();
    if (!info.isFile()) throw new UnreadableFileError('not a regular file: skipped');
    if (info.size > maxBytes) throw new UnreadableFileError(tooBig(info.size));
    return { handle, size: info.size };
  } catch (error) {
    await handle.close();
    throw error;
  }
}

/** The text of `relative` (workspace-relative), or undefined when it does not exist. */
export async function readWorkspaceText(root: string, relative: string, maxBytes: number): Promise<string | undefined> {
  let real: string;
  try {
    real = await resolveInWorkspace(root, relative);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    if (error instanceof InvalidInputError) throw new UnreadableFileError('a link that leads out of the workspace: skipped');
    throw error;
  }
  const { handle, size } = await openRegularFile(real, maxBytes, (n) => `${n} bytes, more than the ${maxBytes} a file of this kind may have: skipped`);
  try {
    const buffer = Buffer.alloc(size);
    const { bytesRead } = await handle.read(buffer, 0, size, 0);
    return buffer.subarray(0, bytesRead).toString('utf8');
  } finally {
    await handle.close();
  }
}
