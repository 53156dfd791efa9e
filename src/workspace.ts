/**
 * The graphcap workspace on disk: path safety, the perspective library, dataset folders. Reads files
 * only; the database side of an import is in src/workspace-sync.ts.
 */
import { createHash } from 'node:crypto';
import { open, readdir, readFile, realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import { imageSize } from 'image-size';
import { z } from 'zod';
import { InvalidInputError } from './errors.js';

export const IMAGE_EXTENSIONS = new Set(['.jpg', '.jpeg', '.png', '.webp', '.gif', '.bmp', '.tif', '.tiff']);
const DATASET_NAME = /^[\w][\w .@+-]{0,127}$/;

/**
 * Normalises a client-supplied workspace path to the stored form (forward slashes, relative), or
 * throws. Absolute paths and any `..` segment are refused outright rather than resolved, so a path
 * means the same thing before and after normalisation.
 */
export function toWorkspaceRelative(input: string): string {
  if (isPlainRelativePath(input)) return input;
  const problem = workspacePathProblem(input);
  if (problem) throw new InvalidInputError(`invalid image path ${JSON.stringify(input)}: ${problem}`);
  return path.posix.normalize(input.replaceAll('\\', '/')).replace(/^\.\//, '');
}

/**
 * Segments of plain characters, none starting with a dot, joined by single forward slashes: such a
 * path is acceptable and already in stored form, so the checks and normalisation below would
 * return it unchanged. Pure string work (nothing touches the filesystem); a create of 10,000 paths
 * spent ~90 ms in the general checks, run several times per path, and spends ~3 ms here.
 */
const PLAIN_RELATIVE_PATH = /^[\w@+=,-][\w .@+=,-]*(?:\/[\w@+=,-][\w .@+=,-]*)*$/;

function isPlainRelativePath(input: string): boolean {
  return input.length <= 1024 && PLAIN_RELATIVE_PATH.test(input);
}

/**
 * A client's path in the form graphcap's parts write them, made workspace-relative: studio sends
 * `/workspace/datasets/...` (the path both containers mount), the Media Server `/datasets/...`,
 * a local tool the absolute path under WORKSPACE_PATH. `roots` are the absolute places the
 * workspace is known by (workspaceRoots). Anything else is returned as given, for the checks to
 * refuse (an absolute path outside, `..`).
 */
export function fromClientPath(input: string, roots: readonly string[]): string {
  if (!input.startsWith('/')) return input;
  for (const root of roots) if (input.startsWith(`${root}/`)) return input.slice(root.length + 1);
  return input.startsWith('/datasets/') ? input.slice(1) : input;
}

/** The absolute paths that name the workspace: WORKSPACE_PATH, where the bridge sees it, and graphcap's /workspace. */
export function workspaceRoots(config: { WORKSPACE_PATH: string; BRIDGE_WORKSPACE_PATH: string }): string[] {
  const roots = [config.WORKSPACE_PATH, config.BRIDGE_WORKSPACE_PATH, '/workspace'].map((r) => r.replace(/\/+$/, '')).filter(Boolean);
  return [...new Set(roots)];
}

/** Why a client path is not acceptable, or undefined when it is. */
export function workspacePathProblem(input: string): string | undefined {
  if (isPlainRelativePath(input)) return undefined;
  if (input.length === 0) return 'must not be empty';
  if (input.length > 1024) return 'must be at most 1024 characters';
  if (input.includes('\0')) return 'must not contain NUL';
  const slashed = input.replaceAll('\\', '/');
  if (slashed.startsWith('/') || /^[a-zA-Z]:/.test(slashed)) {
    return 'must be in the workspace: datasets/..., /datasets/..., /workspace/... or under WORKSPACE_PATH';
  }
  if (slashed.split('/').includes('..')) return 'must not contain ".." segments';
  const normalised = path.posix.normalize(slashed);
  if (normalised === '.' || normalised.endsWith('/')) return 'must name a file';
  return undefined;
}

/**
 * Absolute path of a stored relative path, after following symlinks; refuses anything whose real
 * location is outside the workspace (a symlink pointing out of it, say). `realRoot`, the root's
 * own real path, spares a caller that resolves many paths one system call each.
 */
export async function resolveInWorkspace(root: string, relative: string, realRoot?: string): Promise<string> {
  realRoot ??= await realpath(root);
  const real = await realpath(path.join(realRoot, toWorkspaceRelative(relative)));
  if (real !== realRoot && !real.startsWith(realRoot + path.sep)) {
    throw new InvalidInputError(`invalid image path ${JSON.stringify(relative)}: leaves the workspace`);
  }
  return real;
}

/** `missing`: no such folder; `empty`: neither datasets/ nor perspective_library/ holds anything. */
export type WorkspaceState = 'ok' | 'empty' | 'missing';

export async function workspaceState(root: string): Promise<WorkspaceState> {
  const isFolder = await stat(root).then((s) => s.isDirectory(), () => false);
  if (!isFolder) return 'missing';
  const entries = async (folder: string) =>
    (await readdir(path.join(root, folder)).catch(() => [])).filter((name) => !name.startsWith('.') && !/^readme/i.test(name));
  const [datasets, library] = await Promise.all([entries('datasets'), entries('perspective_library')]);
  return datasets.length + library.length === 0 ? 'empty' : 'ok';
}

// ---------------------------------------------------------------------------------------------
// Datasets

export interface ImageFile {
  /** Relative to the workspace. */
  path: string;
  sizeBytes: number;
  mtime: Date;
}

export interface ImageMetadata {
  format: string | null;
  width: number | null;
  height: number | null;
  contentHash: string;
}

export function isValidDatasetName(name: string): boolean {
  return DATASET_NAME.test(name) && name !== '.' && name !== '..';
}

/** Whether `datasets/<name>/` exists: such a dataset follows its folder. */
export async function datasetFolderExists(root: string, name: string): Promise<boolean> {
  if (!isValidDatasetName(name)) return false;
  return stat(path.join(root, 'datasets', name)).then((s) => s.isDirectory(), () => false);
}

/** Dataset folders under `datasets/`. */
export async function listDatasetFolders(root: string): Promise<string[]> {
  const entries = await readdir(path.join(root, 'datasets'), { withFileTypes: true }).catch(notFoundAsEmpty);
  return entries
    .filter((e) => e.isDirectory() && isValidDatasetName(e.name))
    .map((e) => e.name)
    .sort();
}

/** File names in locale order (the order of the import's reports); a collator, not localeCompare per pair. */
const byName = new Intl.Collator().compare;

/**
 * The candidate image paths directly inside `datasets/<name>/` (graphcap's layout is flat;
 * `analysis/` and other folders hold results, not images), by extension, in locale order: names
 * only, so a 100,000-file folder costs its names; statImageFile says which are image files.
 */
export async function listDatasetImagePaths(root: string, name: string): Promise<string[]> {
  if (!isValidDatasetName(name)) throw new InvalidInputError(`invalid dataset name ${JSON.stringify(name)}`);
  const names = await readdir(path.join(root, 'datasets', name)).catch(notFoundAsEmpty);
  return names
    .filter((entry) => IMAGE_EXTENSIONS.has(path.extname(entry).toLowerCase()))
    .sort(byName)
    .map((entry) => `datasets/${name}/${entry}`);
}

/**
 * A workspace file's size and modification time, or undefined when it is not a regular file inside
 * the workspace (a symlink leading out of it, a folder, a file gone since it was listed).
 * `realRoot` is the workspace's real path (realpath of the root), resolved once by the caller.
 */
export async function statImageFile(realRoot: string, relative: string): Promise<ImageFile | undefined> {
  try {
    const real = await resolveInWorkspace(realRoot, relative, realRoot);
    const info = await stat(real);
    return info.isFile() ? { path: relative, sizeBytes: info.size, mtime: info.mtime } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * One image file of the workspace, for registering it through the API: it must exist inside the
 * workspace and have an image extension. 400 (naming `field`) otherwise.
 */
export async function readWorkspaceImage(root: string, relative: string, field = 'path'): Promise<ImageFile & ImageMetadata> {
  const problem = workspacePathProblem(relative);
  const fail = (message: string): never => {
    throw new InvalidInputError(`${field}: ${message}`, [{ path: field, message }]);
  };
  if (problem) fail(problem);
  const normalised = toWorkspaceRelative(relative);
  if (!IMAGE_EXTENSIONS.has(path.extname(normalised).toLowerCase())) {
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
  return { path: normalised, sizeBytes: info.size, mtime: info.mtime, ...(await readImageMetadata(absolute)) };
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
export async function readImageMetadata(absolute: string, buffers: ReadBuffers = newReadBuffers()): Promise<ImageMetadata> {
  const hash = createHash('sha256');
  const handle = await open(absolute, 'r');
  let headerLength = 0;
  try {
    const { size } = await handle.stat();
    const headerSize = Math.min(size, IMAGE_HEADER_BYTES);
    while (headerLength < headerSize) {
      const { bytesRead } = await handle.read(buffers.header, headerLength, headerSize - headerLength, headerLength);
      if (bytesRead === 0) break;
      headerLength += bytesRead;
    }
    hash.update(buffers.header.subarray(0, headerLength));
    for (let position = headerLength; ; ) {
      const { bytesRead } = await handle.read(buffers.chunk, 0, READ_CHUNK_BYTES, position);
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

// ---------------------------------------------------------------------------------------------
// Perspective library

/** graphcap's perspective file format; fields it does not model are kept in `definition`. */
export const perspectiveFileSchema = z.looseObject({
  name: z.string().regex(/^[\w.-]{1,128}$/, 'must be 1-128 letters, digits, _ . -'),
  display_name: z.string().min(1).optional(),
  version: z.union([z.string(), z.number()]).transform(String).default('1'),
  prompt: z.string().min(1),
  schema_fields: z.array(z.looseObject({ name: z.string() })).default([]),
  module: z.string().min(1).optional(),
  tags: z.array(z.string()).default([]),
  priority: z.number().int().default(50),
  deprecated: z.boolean().default(false),
  replacement: z.string().nullish(),
  description: z.string().nullish(),
});

export interface PerspectiveDefinition {
  name: string;
  displayName: string;
  version: string;
  module: string;
  description: string | null;
  prompt: string;
  schemaFields: unknown[];
  tags: string[];
  priority: number;
  deprecated: boolean;
  replacement: string | null;
  enabled: boolean;
  definition: Record<string, unknown>;
  definitionHash: string;
  sourcePath: string;
}

/** JSON with object keys sorted at every level: the same value always gives the same text. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v,
  );
}

/**
 * sha256 of a perspective definition's canonical JSON: a change of content changes it, a change
 * of layout (indentation, key order) does not.
 */
export function hashDefinition(definition: Record<string, unknown>): string {
  return createHash('sha256').update(canonicalJson(definition)).digest('hex');
}

export interface LibraryProblem {
  file: string;
  message: string;
}

const settingsSchema = z.looseObject({
  modules: z.record(z.string(), z.looseObject({ enabled: z.boolean().default(true) })).default({}),
});

/** Module enablement from `config/perspective_settings.json`; a module it does not list is enabled. */
export async function readModuleSettings(root: string): Promise<Map<string, boolean>> {
  const file = path.join(root, 'config', 'perspective_settings.json');
  const text = await readFile(file, 'utf8').catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined;
    throw error;
  });
  if (text === undefined) return new Map();
  const settings = settingsSchema.parse(JSON.parse(text));
  return new Map(Object.entries(settings.modules).map(([name, m]) => [name, m.enabled]));
}

/**
 * Every valid perspective under `perspective_library/`, and a problem for each file that is not;
 * `libraryFound` is false when there is no library folder at all.
 */
export async function loadPerspectiveLibrary(
  root: string,
): Promise<{ perspectives: PerspectiveDefinition[]; problems: LibraryProblem[]; libraryFound: boolean }> {
  const libraryRoot = path.join(root, 'perspective_library');
  const libraryFound = await stat(libraryRoot).then((s) => s.isDirectory(), () => false);
  const modules = await readModuleSettings(root);
  const files = (await readdir(libraryRoot, { recursive: true }).catch(notFoundAsEmpty))
    .map(String)
    .filter((f) => f.endsWith('.json'))
    .sort();
  const perspectives = new Map<string, PerspectiveDefinition>();
  const problems: LibraryProblem[] = [];
  for (const file of files) {
    const sourcePath = `perspective_library/${file.split(path.sep).join('/')}`;
    try {
      const text = await readFile(path.join(libraryRoot, file), 'utf8');
      const raw = JSON.parse(text) as unknown;
      const parsed = perspectiveFileSchema.parse(raw);
      const module = parsed.module ?? file.split(path.sep)[0] ?? 'default';
      if (perspectives.has(parsed.name)) {
        problems.push({ file: sourcePath, message: `duplicate perspective name ${parsed.name}; the first file wins` });
        continue;
      }
      perspectives.set(parsed.name, {
        name: parsed.name,
        displayName: parsed.display_name ?? parsed.name,
        version: parsed.version,
        module,
        description: parsed.description ?? null,
        prompt: parsed.prompt,
        schemaFields: parsed.schema_fields,
        tags: parsed.tags,
        priority: parsed.priority,
        deprecated: parsed.deprecated,
        replacement: parsed.replacement ?? null,
        enabled: modules.get(module) ?? true,
        definition: raw as Record<string, unknown>,
        definitionHash: hashDefinition(raw as Record<string, unknown>),
        sourcePath,
      });
    } catch (error) {
      const message =
        error instanceof z.ZodError
          ? error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')
          : (error as Error).message;
      problems.push({ file: sourcePath, message });
    }
  }
  return { perspectives: [...perspectives.values()], problems, libraryFound };
}

function notFoundAsEmpty(error: NodeJS.ErrnoException): never[] {
  if (error.code === 'ENOENT' || error.code === 'ENOTDIR') return [];
  throw error;
}
