/**
 * Image files of the workspace: which files count as images, their size and time (without reading
 * them), and their metadata (format, dimensions, sha256) read in one pass.
 */
import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { imageSize } from 'image-size';
import { InvalidInputError } from '../errors.js';
import { resolveInWorkspace, toWorkspaceRelative, workspacePathProblem } from './paths.js';
import { openRegularFile, UnreadableFileError } from './safe-read.js';

/** graphcap's (jpg, jpeg, png, gif, webp, svg), and a few more image-size reads. */
export const IMAGE_EXTENSIONS = new Set(['.jpg', '.jpeg', '.png', '.webp', '.gif', '.svg', '.bmp', '.tif', '.tiff']);

export const isImageName = (name: string) => IMAGE_EXTENSIONS.has(path.extname(name).toLowerCase());

export interface ImageFile {
  /** Relative to the workspace. */
  path: string;
  /** Its real path (links resolved, inside the workspace): what is opened. */
  real: string;
  sizeBytes: number;
  mtime: Date;
}

/** The biggest file hashed as an image by default (WORKSPACE_IMAGE_MAX_BYTES); hashing a bigger one would hold a scan for minutes. */
export const IMAGE_MAX_BYTES = 2 * 1024 ** 3;

/** How big a workspace file the import reads (WORKSPACE_IMAGE_MAX_BYTES, WORKSPACE_LIBRARY_FILE_MAX_BYTES). */
export interface WorkspaceLimits {
  imageMaxBytes: number;
  libraryFileMaxBytes: number;
}

export interface ImageMetadata {
  format: string | null;
  width: number | null;
  height: number | null;
  contentHash: string;
}

/** A file a scan skipped, and why. */
export interface FileProblem {
  path: string;
  message: string;
}

/**
 * A workspace file's size and modification time, or why it is skipped: a symlink leading out of
 * the workspace, something other than a regular file, a file gone since it was listed or one that
 * cannot be read. `realRoot` is the workspace's real path (realpath of the root), resolved once by
 * the caller.
 */
export async function statImageFile(realRoot: string, relative: string, maxBytes = IMAGE_MAX_BYTES): Promise<ImageFile | FileProblem> {
  let real: string;
  try {
    real = await resolveInWorkspace(realRoot, relative, realRoot);
  } catch (error) {
    const e = error as NodeJS.ErrnoException;
    if (e instanceof InvalidInputError) return { path: relative, message: 'a link that leads out of the workspace: skipped' };
    return { path: relative, message: e.code === 'ENOENT' ? GONE : `cannot be read (${e.code ?? e.message})` };
  }
  try {
    const info = await stat(real);
    if (!info.isFile()) return { path: relative, message: 'not a regular file: skipped' };
    if (info.size > maxBytes) return { path: relative, message: tooBig(info.size, maxBytes) };
    return { path: relative, real, sizeBytes: info.size, mtime: info.mtime };
  } catch (error) {
    return { path: relative, message: `cannot be read (${(error as NodeJS.ErrnoException).code ?? 'error'})` };
  }
}

export const isProblem = (f: ImageFile | FileProblem): f is FileProblem => 'message' in f;

const tooBig = (size: number, maxBytes: number) => `${size} bytes, more than an image may have (${maxBytes}, WORKSPACE_IMAGE_MAX_BYTES): skipped`;

/** The problem of a file that is not there (any more). */
export const GONE = 'gone since it was listed';

/**
 * One image file of the workspace, for registering it through the API: it must exist inside the
 * workspace and have an image extension. 400 (naming `field`) otherwise.
 */
export async function readWorkspaceImage(root: string, relative: string, field = 'path', maxBytes = IMAGE_MAX_BYTES): Promise<ImageFile & ImageMetadata> {
  const problem = workspacePathProblem(relative);
  const fail = (message: string): never => {
    throw new InvalidInputError(`${field}: ${message}`, [{ path: field, message }]);
  };
  if (problem) fail(problem);
  const normalised = toWorkspaceRelative(relative);
  if (!isImageName(normalised)) {
    fail(`not an image file (extensions: ${[...IMAGE_EXTENSIONS].join(', ')})`);
  }
  let absolute = '';
  try {
    absolute = await resolveInWorkspace(root, normalised);
  } catch (error) {
    if (error instanceof InvalidInputError) fail('leaves the workspace');
    fail('no such file in the workspace');
  }
  const info = await stat(absolute);
  if (!info.isFile()) fail('not a file');
  if (info.size > maxBytes) fail(`${info.size} bytes, more than an image may have (${maxBytes}, WORKSPACE_IMAGE_MAX_BYTES)`);
  const metadata = await readImageMetadata(absolute, undefined, maxBytes).catch((error: unknown) => (error instanceof UnreadableFileError ? fail(error.message) : Promise.reject(error)));
  return { path: normalised, real: absolute, sizeBytes: info.size, mtime: info.mtime, ...metadata };
}

/** What image-size reads of a file for its dimensions (its imageSizeFromFile reads the same). */
const IMAGE_HEADER_BYTES = 512 * 1024;
const READ_CHUNK_BYTES = 64 * 1024;

/** Buffers readImageMetadata reads into; a scan reuses one set per concurrent read. */
export interface ReadBuffers {
  header: Buffer;
  chunk: Buffer;
}

export function newReadBuffers(): ReadBuffers {
  return { header: Buffer.allocUnsafe(IMAGE_HEADER_BYTES), chunk: Buffer.allocUnsafe(READ_CHUNK_BYTES) };
}

/**
 * Format and dimensions from the file's header (image-size, on its first 512 KB as its
 * imageSizeFromFile would), and a sha256 of its bytes: one pass over the file, into `buffers`, so
 * memory stays at those whatever the file's size and however many files a scan reads. (Before, each
 * file was read twice into fresh buffers; over a 100,000-file import that garbage, outside the
 * JavaScript heap, held RSS ~60 MB higher until the collector caught up.)
 */
export async function readImageMetadata(real: string, buffers: ReadBuffers = newReadBuffers(), maxBytes = IMAGE_MAX_BYTES): Promise<ImageMetadata> {
  const hash = createHash('sha256');
  // `real` has its links resolved (statImageFile checked where they lead): one put in its place
  // since is not followed, a FIFO does not block the open, and what is read is checked on the descriptor.
  const { handle, size } = await openRegularFile(real, maxBytes, (n) => tooBig(n, maxBytes));
  let headerLength = 0;
  try {
    const headerSize = Math.min(size, IMAGE_HEADER_BYTES);
    while (headerLength < headerSize) {
      const { bytesRead } = await handle.read(buffers.header, headerLength, headerSize - headerLength, headerLength);
      if (bytesRead === 0) break;
      headerLength += bytesRead;
    }
    hash.update(buffers.header.subarray(0, headerLength));
    // Up to the size it had when opened: a file that grows meanwhile is not read forever.
    for (let position = headerLength; position < size; ) {
      const { bytesRead } = await handle.read(buffers.chunk, 0, Math.min(READ_CHUNK_BYTES, size - position), position);
      if (bytesRead === 0) break;
      hash.update(buffers.chunk.subarray(0, bytesRead));
      position += bytesRead;
    }
  } finally {
    await handle.close();
  }
  const header = buffers.header.subarray(0, headerLength);
  let dimensions: { type?: string; width?: number; height?: number } = {};
  try {
    if (header.length === 0) throw new Error('Empty file');
    dimensions = imageSize(header);
  } catch {
    // Not an image it can read: keep the file, without dimensions.
  }
  return {
    format: dimensions.type ?? null,
    width: dimensions.width ?? null,
    height: dimensions.height ?? null,
    contentHash: hash.digest('hex'),
  };
}
