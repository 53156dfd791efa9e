/** Workspace import on demand: `/api/workspace/sync`. */
import { z } from 'zod';
import { publicProcedure, router } from '../trpc.js';

const counts = { added: z.int(), updated: z.int(), unchanged: z.int() };
const changes = (what: string) =>
  z
    .object({ added: z.array(z.string()), updated: z.array(z.string()), removed: z.array(z.string()) })
    .describe(`The ${what} behind the added, updated and removed counts.`);

export const syncOutput = z.object({
  perspectives: z.object({
    ...counts,
    updated: z.int().describe('Changed definition (a new revision) or enablement.'),
    removed: z.int().describe('Library perspectives whose file is gone: detached from the library and disabled, captions kept.'),
    changes: changes('perspective names'),
    problems: z.array(z.object({ file: z.string(), message: z.string() })).describe('Library files that were skipped.'),
  }),
  datasets: z.array(
    z.object({
      name: z.string(),
      datasetId: z.uuid(),
      ...counts,
      updated: z.int().describe('Files whose content changed (metadata read again).'),
      removed: z.int().describe('Members whose file is gone; they leave the dataset, their image and captions stay.'),
      changes: changes('paths'),
      problems: z
        .array(z.object({ path: z.string(), message: z.string() }))
        .describe('Files skipped: a link out of the workspace, not a regular file, unreadable.'),
      captions: z
        .object({
          files: z.int().describe('graphcap captions.jsonl files beside the dataset’s images.'),
          read: z.int().describe('Of which read: new or changed since the last import.'),
          imported: z.int().describe('Captions stored from their lines (a line is imported once).'),
          problems: z
            .array(z.object({ file: z.string(), line: z.int().optional(), message: z.string() }))
            .describe('Lines skipped (not a caption, no such image or perspective), at most 20 per file.'),
        })
        .describe('The captions graphcap already has for the dataset, imported from its captions.jsonl files.'),
    }),
  ),
}).meta({
  description: 'What the import changed: perspectives added, updated and unchanged, and each dataset’s images.',
  examples: [
    {
      perspectives: {
        added: 1,
        updated: 1,
        unchanged: 16,
        removed: 0,
        changes: { added: ['product_shot'], updated: ['art_critic'], removed: [] },
        problems: [],
      },
      datasets: [
        {
          name: 'os_img',
          datasetId: '9f8e7d6c-5b4a-4392-a1b0-c9d8e7f6a5b4',
          added: 1,
          updated: 0,
          unchanged: 6,
          removed: 0,
          changes: { added: ['datasets/os_img/heron.jpg'], updated: [], removed: [] },
          problems: [],
          captions: { files: 7, read: 1, imported: 1, problems: [] },
        },
      ],
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
          'Loads perspective_library/**.json (module enablement from config/perspective_settings.json; a changed ' +
          'definition becomes a new revision) and registers the images of every datasets/<name>/ folder (format, size, ' +
          'dimensions, sha256). Idempotent; reports what was added, changed and removed.',
        successDescription: 'What the import changed.',
        errorResponses: { 500: 'Unexpected error' },
      },
    })
    .input(z.void())
    .output(syncOutput)
    .mutation(async ({ ctx }) => ctx.workspace.sync()),
});
