/**
 * The OpenAPI document, generated from the routers by trpc-to-openapi, with the error responses
 * rewritten to the problem-details shape the REST face really sends.
 */
import { generateOpenApiDocument, type OpenAPIObject } from 'trpc-to-openapi';
import { appRouter } from './routers/index.js';

export const API_VERSION = '0.1.0';

const problemSchema = {
  type: 'object',
  description: 'RFC 9457 problem details. Every REST error has this shape.',
  required: ['type', 'title', 'status', 'detail', 'code'],
  properties: {
    type: { type: 'string', description: 'A URI reference naming the problem type.', example: 'about:blank' },
    title: { type: 'string', description: 'Short summary of the status.', example: 'Not Found' },
    status: { type: 'integer', description: 'HTTP status code.', example: 404 },
    detail: { type: 'string', description: 'What went wrong, for a person.', example: 'job 5b0c… not found' },
    code: { type: 'string', description: 'The tRPC error code of the same meaning.', example: 'NOT_FOUND' },
    instance: { type: 'string', description: 'The request path.' },
    requestId: { type: 'string', description: 'The X-Request-Id of the request; the logs carry it too.' },
    errors: {
      type: 'array',
      description: 'One entry per failing field, for validation errors.',
      items: {
        type: 'object',
        required: ['path', 'message'],
        properties: { path: { type: 'string', example: 'perspectives.0' }, message: { type: 'string' } },
      },
    },
  },
};

const problemResponse = (description: string) => ({
  description,
  content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } },
});

/** The SSE endpoint is a plain express route (tRPC subscriptions have no OpenAPI face): described here. */
const eventsPath: OpenAPIObject['paths'] = {
  '/api/perspectives/batch/events': {
    get: {
      operationId: 'batch-events',
      summary: 'Follow job events live (server-sent events)',
      description:
        'A text/event-stream of JOB_CREATED, JOB_STATUS_CHANGED and JOB_PROGRESS events, for all jobs or one (`jobId`). ' +
        'Each SSE message has `id:` (the event sequence number), `event:` (the type) and `data:` (the event JSON). ' +
        'Reconnect with the `Last-Event-ID` header (browsers do it themselves) or `lastEventId` to get what was missed.',
      tags: ['batch'],
      parameters: [
        { in: 'query' as const, name: 'jobId', required: false, schema: { type: 'string', format: 'uuid' }, description: 'Only this job’s events.' },
        { in: 'query' as const, name: 'lastEventId', required: false, schema: { type: 'integer', minimum: 0 }, description: 'Resume after this event.' },
        { in: 'header' as const, name: 'Last-Event-ID', required: false, schema: { type: 'string' }, description: 'Resume after this event (SSE standard).' },
      ],
      responses: {
        '200': {
          description: 'The event stream; stays open.',
          content: {
            'text/event-stream': {
              schema: { type: 'string' },
              example:
                'id: 42\nevent: JOB_PROGRESS\ndata: {"id":"7f1c…","seq":42,"type":"JOB_PROGRESS","occurredAt":"2026-11-28T12:00:00.000Z","jobId":"5b0c…","data":{"progress":50,"processedImages":7,"failedImages":0,"totalImages":14},"requestId":"c0ffee"}\n\n',
            },
          },
        },
        '400': problemResponse('Invalid jobId or lastEventId'),
        '401': problemResponse('Missing or wrong token, when API_TOKEN is set'),
      },
    },
  },
};

export function buildOpenApiDocument(): OpenAPIObject {
  const doc = generateOpenApiDocument(appRouter, {
    title: 'graphcap Data Service',
    version: API_VERSION,
    description:
      'Data store of graphcap (images, datasets, perspectives, captions) and orchestrator of its batch caption jobs. ' +
      'Every REST operation is also a tRPC procedure at /api/trpc. Errors are RFC 9457 problem details.',
    baseUrl: '/',
    tags: ['batch', 'batch-internal', 'workspace'],
  });
  // trpc-to-openapi describes errors with its own shapes (error.NOT_FOUND ...); the REST face sends
  // problem details instead, so those are replaced by one Problem schema.
  const schemas = Object.fromEntries(
    Object.entries(doc.components?.schemas ?? {}).filter(([name]) => !name.startsWith('error.')),
  );
  doc.paths = { ...doc.paths, ...eventsPath };
  type Schemas = NonNullable<OpenAPIObject['components']>['schemas'];
  doc.components = { ...doc.components, schemas: { ...schemas, Problem: problemSchema } as Schemas };
  for (const operations of Object.values(doc.paths ?? {})) {
    for (const operation of Object.values(operations as Record<string, { responses?: Record<string, { description?: string; content?: unknown }> }>)) {
      for (const [status, response] of Object.entries(operation.responses ?? {})) {
        if (Number(status) >= 400) {
          response.content = { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } };
        }
      }
    }
  }
  return doc;
}
