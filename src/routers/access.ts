/**
 * `GET /api/access`: what the caller's token allows, for pages and clients that adapt to it (the
 * queue board shows its action buttons only when `write` is true). Open to every caller: it tells
 * nothing a 401 would not.
 */
import { z } from 'zod';
import { accessOf } from '../http/auth.js';
import { openProcedure } from '../trpc.js';

export const accessOutput = z
  .object({
    tokenRequired: z.boolean().describe('Whether the service wants a bearer token (API_TOKEN is set); false = open.'),
    read: z.boolean().describe('Whether this caller may read: queries, GETs, the event streams.'),
    write: z.boolean().describe('Whether this caller may change state (create, pause, cancel ...): the API token, or an open service.'),
  })
  .meta({
    id: 'Access',
    description: 'What the caller’s bearer token allows.',
    examples: [{ tokenRequired: true, read: true, write: false }],
  });

export const accessQuery = openProcedure
  .meta({
    openapi: {
      method: 'GET',
      path: '/api/access',
      tags: ['operations'],
      summary: 'What the caller’s token allows',
      description:
        'Open to every caller, with or without a token. An open service (no tokens configured) allows everything; ' +
        'otherwise API_READ_TOKEN reads and API_TOKEN (or INTERNAL_TOKEN) also writes. A missing or unknown token ' +
        'reads nothing.',
      successDescription: 'The caller’s capabilities.',
      protect: false,
      errorResponses: { 500: 'Unexpected error' },
    },
  })
  .input(z.void())
  .output(accessOutput)
  .query(({ ctx }) => accessOf(ctx.scope, ctx.config));
