/** Workspace import on demand: `/api/workspace/sync`. */
import { z } from 'zod';
import { publicProcedure, router } from '../trpc.js';
import { syncWorkspace } from '../workspace-sync.js';

const counts = { added: z.int(), updated: z.int(), unchanged: z.int() };

export const syncOutput = z.object({
  perspectives: z.object({
    ...counts,
    problems: z.array(z.object({ file: z.string(), message: z.string() })).describe('Library files that were skipped.'),
  }),
  datasets: z.array(
    z.object({
      name: z.string(),
      datasetId: z.uuid(),
      ...counts,
      removed: z.int().describe('Members whose file is gone; they leave the dataset.'),
    }),
  ),
}).meta({
  description: 'What the import changed: perspectives added, updated and unchanged, and each dataset’s images.',
  examples: [
    {
      perspectives: { added: 12, updated: 0, unchanged: 0, problems: [] },
      datasets: [{ name: 'os_img', datasetId: '9f8e7d6c-5b4a-4392-a1b0-c9d8e7f6a5b4', added: 7, updated: 0, unchanged: 0, removed: 0 }],
    },
  ],
});

export const workspaceRouter = router({
  sync: publicProcedure
    .meta({
      openapi: {
        method: 'POST',
        path: '/api/workspace/sync',
        tags: ['workspace'],
        summary: 'Import the workspace',
        description:
          'Loads perspective_library/**.json (module enablement from config/perspective_settings.json) and ' +
          'registers the images of every datasets/<name>/ folder. Idempotent; reports what changed.',
        successDescription: 'What the import changed.',
        errorResponses: { 500: 'Unexpected error' },
      },
    })
    .input(z.void())
    .output(syncOutput)
    .mutation(async ({ ctx }) => syncWorkspace(ctx.db, ctx.config.WORKSPACE_PATH, ctx.logger)),
});
