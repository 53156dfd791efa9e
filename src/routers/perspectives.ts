/**
 * Perspectives: `/api/perspectives`. Every id in a path is a UUID and every route has a literal
 * segment count of its own, so none of them can capture the batch queue's `/api/perspectives/batch/*`.
 */
import { listCaptions } from '../db/captions.js';
import {
  createPerspective,
  deletePerspective,
  getPerspective,
  getPerspectiveVersion,
  listPerspectives,
  listPerspectiveVersions,
  updatePerspective,
} from '../db/perspectives.js';
import { publicProcedure, router } from '../trpc.js';
import { captionPage, toCaption } from './captions.schemas.js';
import {
  createPerspectiveInput,
  listPerspectivesInput,
  listVersionsInput,
  perspective,
  perspectiveCaptionsInput,
  perspectiveDeleted,
  perspectiveIdParam,
  perspectivePage,
  perspectiveVersion,
  perspectiveVersionPage,
  toPerspective,
  toPerspectiveVersion,
  updatePerspectiveInput,
  versionInput,
} from './perspectives.schemas.js';

const BASE = '/api/perspectives';
const tags = ['perspectives'];

const errors = {
  list: { 400: 'Invalid filter, sort or page', 500: 'Unexpected error' },
  one: { 400: 'Invalid perspective id', 404: 'Perspective not found', 500: 'Unexpected error' },
  change: {
    400: 'Invalid input',
    404: 'Perspective not found',
    409: 'A library perspective (change its file), or in use by pending or running job items',
    500: 'Unexpected error',
  },
};

export const perspectivesRouter = router({
  list: publicProcedure
    .meta({
      openapi: {
        method: 'GET',
        path: BASE,
        tags,
        summary: 'List perspectives',
        description:
          'Filtered by module, tags (all of them), enabled, deprecated and name; sorted by name (default), displayName, ' +
          'module, priority, createdAt or updatedAt. Served from an in-memory copy that is checked against the database on every call.',
        errorResponses: errors.list,
      },
    })
    .input(listPerspectivesInput)
    .output(perspectivePage)
    .query(async ({ ctx, input }) => {
      const { items, total } = await listPerspectives(ctx.db, input);
      return { items: items.map(toPerspective), total, page: input.page, limit: input.limit };
    }),

  get: publicProcedure
    .meta({ openapi: { method: 'GET', path: `${BASE}/{perspectiveId}`, tags, summary: 'Get a perspective', description: 'Its current definition and revision.', errorResponses: errors.one } })
    .input(perspectiveIdParam)
    .output(perspective)
    .query(async ({ ctx, input }) => toPerspective(await getPerspective(ctx.db, input.perspectiveId))),

  captions: publicProcedure
    .meta({
      openapi: {
        method: 'GET',
        path: `${BASE}/{perspectiveId}/captions`,
        tags,
        summary: 'List a perspective’s captions',
        description: 'The captions list (same filters and sorts) of one perspective.',
        errorResponses: { ...errors.one, 400: 'Invalid perspective id, filter, sort or page' },
      },
    })
    .input(perspectiveCaptionsInput)
    .output(captionPage)
    .query(async ({ ctx, input }) => {
      await getPerspective(ctx.db, input.perspectiveId);
      const { items, total } = await listCaptions(ctx.db, input);
      return { items: items.map(toCaption), total, page: input.page, limit: input.limit };
    }),

  versions: publicProcedure
    .meta({
      openapi: {
        method: 'GET',
        path: `${BASE}/{perspectiveId}/versions`,
        tags,
        summary: 'List a perspective’s revisions',
        description: 'Every definition it has had; captions name the revision they were made with.',
        errorResponses: errors.one,
      },
    })
    .input(listVersionsInput)
    .output(perspectiveVersionPage)
    .query(async ({ ctx, input }) => {
      const { items, total } = await listPerspectiveVersions(ctx.db, input.perspectiveId, input);
      return { items: items.map(toPerspectiveVersion), total, page: input.page, limit: input.limit };
    }),

  version: publicProcedure
    .meta({
      openapi: {
        method: 'GET',
        path: `${BASE}/{perspectiveId}/versions/{revision}`,
        tags,
        summary: 'Get one revision of a perspective',
        description: 'A revision never changes (cacheable).',
        errorResponses: { 400: 'Invalid perspective id or revision', 404: 'No such perspective or revision', 500: 'Unexpected error' },
      },
    })
    .input(versionInput)
    .output(perspectiveVersion)
    .query(async ({ ctx, input }) => toPerspectiveVersion(await getPerspectiveVersion(ctx.db, input.perspectiveId, input.revision))),

  create: publicProcedure
    .meta({
      openapi: {
        method: 'POST',
        path: BASE,
        tags,
        summary: 'Create a perspective',
        description:
          'A perspective outside the library, at revision 1. 409 when the name is taken. (A library file of the same name, ' +
          'added later, takes it over at the next import.)',
        errorResponses: { 400: 'Invalid input', 409: 'Name taken', 500: 'Unexpected error' },
      },
    })
    .input(createPerspectiveInput)
    .output(perspective)
    .mutation(async ({ ctx, input }) =>
      toPerspective(
        await createPerspective(ctx.db, {
          ...input,
          displayName: input.displayName ?? input.name,
          description: input.description ?? null,
          replacement: input.replacement ?? null,
        }),
      ),
    ),

  update: publicProcedure
    .meta({
      openapi: {
        method: 'PATCH',
        path: `${BASE}/{perspectiveId}`,
        tags,
        summary: 'Change a perspective made through the API',
        description:
          'A change of its definition makes a new revision (older captions keep theirs); `enabled` alone does not. ' +
          'Library perspectives are 409: change their file and import the workspace.',
        errorResponses: errors.change,
      },
    })
    .input(updatePerspectiveInput)
    .output(perspective)
    .mutation(async ({ ctx, input }) => {
      const { perspectiveId, ...changes } = input;
      return toPerspective(await updatePerspective(ctx.db, perspectiveId, changes));
    }),

  delete: publicProcedure
    .meta({
      openapi: {
        method: 'DELETE',
        path: `${BASE}/{perspectiveId}`,
        tags,
        summary: 'Delete a perspective made through the API',
        description:
          'With its revisions and captions, in one transaction. 409 for library perspectives (remove the file; the import ' +
          'then disables it and keeps its captions) and while pending or running job items use it.',
        errorResponses: errors.change,
      },
    })
    .input(perspectiveIdParam)
    .output(perspectiveDeleted)
    .mutation(async ({ ctx, input }) => {
      await deletePerspective(ctx.db, input.perspectiveId);
      return { deleted: true as const, perspectiveId: input.perspectiveId };
    }),
});
