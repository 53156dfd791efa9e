/** graphcap's perspective library on disk: `perspective_library/<module>/<name>.json` and the module settings. */
import { createHash } from 'node:crypto';
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { notFoundAsEmpty } from './paths.js';
import { readWorkspaceText, UnreadableFileError } from './safe-read.js';

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

/** The most bytes a perspective file or the module settings may have by default (graphcap's are a few KB). */
export const LIBRARY_FILE_MAX_BYTES = 1024 * 1024;

/** Module enablement from `config/perspective_settings.json`; a module it does not list is enabled. */
export async function readModuleSettings(root: string, maxBytes = LIBRARY_FILE_MAX_BYTES): Promise<Map<string, boolean>> {
  const text = await readWorkspaceText(root, 'config/perspective_settings.json', maxBytes);
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
  maxBytes = LIBRARY_FILE_MAX_BYTES,
): Promise<{ perspectives: PerspectiveDefinition[]; problems: LibraryProblem[]; libraryFound: boolean }> {
  const libraryRoot = path.join(root, 'perspective_library');
  const libraryFound = await stat(libraryRoot).then((s) => s.isDirectory(), () => false);
  const problems: LibraryProblem[] = [];
  const modules = await readModuleSettings(root, maxBytes).catch((error: unknown) => {
    if (!(error instanceof UnreadableFileError)) throw error;
    problems.push({ file: 'config/perspective_settings.json', message: error.message });
    return new Map<string, boolean>();
  });
  const files = (await readdir(libraryRoot, { recursive: true }).catch(notFoundAsEmpty))
    .map(String)
    .filter((f) => f.endsWith('.json'))
    .sort();
  const perspectives = new Map<string, PerspectiveDefinition>();
  for (const file of files) {
    const sourcePath = `perspective_library/${file.split(path.sep).join('/')}`;
    try {
      const text = await readWorkspaceText(root, sourcePath, maxBytes);
      if (text === undefined) throw new UnreadableFileError('gone since it was listed');
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
