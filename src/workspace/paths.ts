/**
 * Workspace paths: what a client may name, in the forms graphcap writes them, and where a stored
 * relative path really leads (never outside the workspace).
 */
import { readdir, realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import { InvalidInputError } from '../errors.js';

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

/** A folder that is not there lists as empty; any other error is thrown. */
export function notFoundAsEmpty(error: NodeJS.ErrnoException): never[] {
  if (error.code === 'ENOENT' || error.code === 'ENOTDIR') return [];
  throw error;
}
