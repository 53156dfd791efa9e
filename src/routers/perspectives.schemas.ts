/** Input and output schemas of the perspectives API (`/api/perspectives`, beside the batch queue). */
import { z } from 'zod';
import { PERSPECTIVE_SORT_KEYS, type PerspectiveRow, type PerspectiveVersionRow } from '../db/perspectives.js';
import { captionListFields, perspectiveName } from './captions.schemas.js';
import { bodyBoolean, bodyNumber, iso, limit, order, page, paginated, queryBoolean, queryInt, queryList, timestamp, uuid } from './common.js';

const definition = z.record(z.string(), z.unknown()).describe('The whole definition in graphcap’s file format (snake_case).');

export const perspective = z
  .object({
    perspectiveId: z.uuid(),
    name: z.string(),
    displayName: z.string(),
    version: z.string().describe('The definition’s own `version` field.'),
    revision: z.int().min(1).describe('The service’s revision of the definition: +1 on every change of content, whatever `version` says.'),
    module: z.string(),
    description: z.string().nullable(),
    prompt: z.string(),
    schemaFields: z.array(z.record(z.string(), z.unknown())).describe('The structured fields a caption has (graphcap’s schema_fields).'),
    tags: z.array(z.string()),
    priority: z.int(),
    deprecated: z.boolean(),
    replacement: z.string().nullable().describe('The perspective to use instead, when deprecated.'),
    enabled: z.boolean().describe('False when its module is disabled in config/perspective_settings.json, or its library file is gone.'),
    source: z.enum(['library', 'api']).describe('library: from perspective_library/ (change the file); api: made through this API.'),
    sourcePath: z.string().nullable(),
    definition,
    definitionHash: z.string().describe('sha256 of the definition’s canonical JSON.'),
    createdAt: timestamp,
    updatedAt: timestamp,
  })
  .meta({ id: 'Perspective', description: 'A way of describing an image (art critic, graph caption, storytelling ...).' });

export function toPerspective(row: PerspectiveRow): z.infer<typeof perspective> {
  const { id, ...rest } = row;
  return {
    perspectiveId: id,
    ...rest,
    source: row.sourcePath ? 'library' : 'api',
    createdAt: iso(row.createdAt),
    updatedAt: iso(row.updatedAt),
  };
}

export const perspectivePage = paginated(perspective).meta({ id: 'PerspectivePage', description: 'A page of perspectives.' });

export const listPerspectivesInput = z
  .object({
    module: queryList(z.string().min(1).max(128), 50).describe('Only perspectives of these modules (repeat for several).').optional(),
    tag: queryList(z.string().min(1).max(128), 20).describe('Only perspectives carrying every one of these tags.').optional(),
    enabled: queryBoolean.describe('Only enabled (true) or disabled (false) perspectives.').optional(),
    deprecated: queryBoolean.describe('Only deprecated (true) or current (false) perspectives.').optional(),
    nameContains: z.string().min(1).max(128).describe('Only perspectives whose name contains this (any case).').optional(),
    sort: z.enum(PERSPECTIVE_SORT_KEYS).default('name').describe('Ties are broken by name.'),
    order,
    page,
    limit,
  })
  .prefault({});

export const perspectiveIdParam = z.object({ perspectiveId: uuid('perspective').describe('The perspective id.') });

const schemaField = z.looseObject({ name: z.string().min(1).max(128) });

/** The fields of a definition; `optional` for updates (no defaults there). */
const fields = {
  displayName: z.string().min(1).max(256),
  version: z.string().min(1).max(64),
  module: z.string().min(1).max(128),
  description: z.string().max(10_000).nullable(),
  prompt: z.string().min(1).max(100_000),
  schemaFields: z.array(schemaField).max(200),
  tags: z.array(z.string().min(1).max(128)).max(50),
  priority: bodyNumber(z.int().min(-1_000_000).max(1_000_000)),
  deprecated: bodyBoolean,
  replacement: perspectiveName.nullable(),
  enabled: bodyBoolean,
};

export const createPerspectiveInput = z
  .strictObject({
    name: perspectiveName,
    displayName: fields.displayName.describe('Default: the name.').optional(),
    version: fields.version.default('1'),
    module: fields.module.default('custom'),
    description: fields.description.optional(),
    prompt: fields.prompt,
    schemaFields: fields.schemaFields.default([]),
    tags: fields.tags.default([]),
    priority: fields.priority.default(50),
    deprecated: fields.deprecated.default(false),
    replacement: fields.replacement.optional(),
    enabled: fields.enabled.default(true),
  })
  .meta({
    description: 'A perspective outside the library (revision 1).',
    examples: [
      {
        name: 'product_shot',
        displayName: 'Product shot',
        prompt: 'Describe the product shown, its materials and the lighting.',
        schemaFields: [{ name: 'product', type: 'str', description: 'What the product is', is_list: false }],
        tags: ['commerce'],
      },
    ],
  });

export const updatePerspectiveInput = z
  .strictObject({
    perspectiveId: uuid('perspective').describe('The perspective id.'),
    displayName: fields.displayName.optional(),
    version: fields.version.optional(),
    module: fields.module.optional(),
    description: fields.description.optional(),
    prompt: fields.prompt.optional(),
    schemaFields: fields.schemaFields.optional(),
    tags: fields.tags.optional(),
    priority: fields.priority.optional(),
    deprecated: fields.deprecated.optional(),
    replacement: fields.replacement.optional(),
    enabled: fields.enabled.optional(),
  })
  .refine((i) => Object.keys(i).length > 1, { message: 'give at least one field to change', path: ['perspectiveId'] });

export const perspectiveDeleted = z.object({ deleted: z.literal(true), perspectiveId: z.uuid() });

export const perspectiveVersion = z
  .object({
    perspectiveId: z.uuid(),
    revision: z.int().min(1),
    version: z.string(),
    definition,
    definitionHash: z.string(),
    sourcePath: z.string().nullable(),
    createdAt: timestamp,
  })
  .meta({ id: 'PerspectiveVersion', description: 'One revision of a perspective’s definition. Never changes.' });

export function toPerspectiveVersion(row: PerspectiveVersionRow): z.infer<typeof perspectiveVersion> {
  return { ...row, createdAt: iso(row.createdAt) };
}

export const perspectiveVersionPage = paginated(perspectiveVersion).meta({ id: 'PerspectiveVersionPage' });

export const listVersionsInput = perspectiveIdParam.extend({
  order: z.enum(['asc', 'desc']).default('desc').describe('By revision; newest first by default.'),
  page,
  limit,
});

export const versionInput = perspectiveIdParam.extend({
  revision: queryInt(1, 1_000_000).describe('The revision.'),
});

export const perspectiveCaptionsInput = z
  .object({ perspectiveId: uuid('perspective').describe('The perspective id.'), ...captionListFields })
  .refine((i) => !i.createdFrom || !i.createdTo || Date.parse(i.createdFrom) <= Date.parse(i.createdTo), {
    message: 'createdFrom must not be after createdTo',
    path: ['createdFrom'],
  });
