/**
 * The OpenAPI document, generated from the routers by trpc-to-openapi, with the error responses
 * rewritten to the problem-details shape the REST face really sends.
 */
import { generateOpenApiDocument, type OpenAPIObject } from 'trpc-to-openapi';
import { z } from 'zod';
import { DATA_ENTITIES } from './db/data-events.js';
import { dataEvent, jobEvent } from './routers/events.schemas.js';
import { appRouter } from './routers/index.js';
import type { Meta } from './trpc.js';

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
      description: 'One entry per failing field, for validation errors: the first 20 (errorCount says how many in all).',
      items: {
        type: 'object',
        required: ['path', 'message'],
        properties: { path: { type: 'string', example: 'perspectives.0' }, message: { type: 'string' } },
      },
    },
    errorCount: { type: 'integer', description: 'How many fields failed in all, with `errors`.', example: 1 },
  },
};

const problemResponse = (description: string) => ({
  description,
  content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } },
});

/**
 * An SSE stream, as OpenAPI 3.2's itemSchema describes one (and schemathesis checks it): each
 * message has `id`, `event` and `data`, the data being JSON of the component `name`.
 */
const sseSchema = (name: string) => ({
  type: 'object',
  description: `One server-sent event; its \`data\` is a ${name} as JSON.`,
  required: ['data'],
  properties: {
    id: { type: 'string', description: 'The event’s sequence number (resume after it with Last-Event-ID).' },
    event: { type: 'string', description: 'The event’s type.' },
    data: { type: 'string', contentMediaType: 'application/json', contentSchema: { $ref: `#/components/schemas/${name}` } },
    retry: { type: 'integer' },
  },
});

/** How a client resumes an event stream: both ways a browser or a client may say the last event it has. */
const RESUME_PARAMETERS = [
  { in: 'query' as const, name: 'lastEventId', required: false, schema: { type: 'integer' as const, minimum: 0 }, description: 'Resume after this event.' },
  { in: 'header' as const, name: 'Last-Event-ID', required: false, schema: { type: 'string' as const }, description: 'Resume after this event (SSE standard).' },
];

/** An event stream's answers: the stream of `name` events (`example`: one event, as the wire has `id:`, `event:`, `data:` lines), 400, 401. */
const sseResponses = (name: string, badRequest: string, example: { id: string; event: string; data: string }) => ({
  '200': {
    description: 'The event stream; stays open.',
    content: { 'text/event-stream': { schema: sseSchema(name), example } },
  },
  '400': problemResponse(badRequest),
  '401': problemResponse('Missing or wrong token, when API_TOKEN is set'),
});

/** The SSE endpoints are plain express routes (tRPC subscriptions have no OpenAPI face): described here. */
const eventsPath: OpenAPIObject['paths'] = {
  '/api/perspectives/batch/events': {
    get: {
      operationId: 'batch-events',
      summary: 'Follow job events live (server-sent events)',
      description:
        'A text/event-stream of JOB_CREATED, JOB_STATUS_CHANGED and JOB_PROGRESS events, for all jobs or one (`jobId`). ' +
        'Each SSE message has `id:` (the event sequence number), `event:` (the type) and `data:` (the event JSON, a `JobEvent`). ' +
        'Reconnect with the `Last-Event-ID` header (browsers do it themselves) or `lastEventId` to get what was missed.',
      tags: ['batch'],
      parameters: [
        { in: 'query' as const, name: 'jobId', required: false, schema: { type: 'string', format: 'uuid' }, description: 'Only this job’s events.' },
        ...RESUME_PARAMETERS,
      ],
      responses: sseResponses('JobEvent', 'Invalid jobId or lastEventId', {
        id: '42',
        event: 'JOB_PROGRESS',
        data: '{"id":"7f1c…","seq":42,"type":"JOB_PROGRESS","occurredAt":"2026-11-28T12:00:00.000Z","jobId":"5b0c…","data":{"progress":50,"processedImages":7,"failedImages":0,"totalImages":14},"requestId":"c0ffee"}',
      }),
    },
  },
  '/api/events': {
    get: {
      operationId: 'data-events',
      summary: 'Follow data changes live (server-sent events)',
      description:
        'A text/event-stream of data change events: images, datasets (and their members), perspectives, captions and ' +
        'providers created, updated or deleted, by a request, a job, a workspace sync or an import. Each lists the ids it is ' +
        'about (at most 1,000: a bulk change is several events). Each SSE message has `id:` (the event sequence number), ' +
        '`event:` (the type, e.g. CAPTION_CREATED) and `data:` (the event JSON, a `DataEvent`). Reconnect with the ' +
        '`Last-Event-ID` header or `lastEventId` to get what was missed.',
      tags: ['events'],
      parameters: [
        {
          in: 'query' as const,
          name: 'entity',
          required: false,
          schema: { type: 'string', example: 'caption,image' },
          description: `Only these entity types, comma-separated (${DATA_ENTITIES.join(', ')}); all when absent.`,
        },
        { in: 'query' as const, name: 'datasetId', required: false, schema: { type: 'string', format: 'uuid' }, description: 'Only events about this dataset (its own and its members’).' },
        { in: 'query' as const, name: 'jobId', required: false, schema: { type: 'string', format: 'uuid' }, description: 'Only changes this job made (its captions).' },
        ...RESUME_PARAMETERS,
      ],
      responses: sseResponses('DataEvent', 'Invalid entity, datasetId, jobId or lastEventId', {
        id: '97',
        event: 'CAPTION_CREATED',
        data: '{"id":"0b6e…","seq":97,"type":"CAPTION_CREATED","occurredAt":"2026-12-06T12:00:00.000Z","jobId":"5b0c…","data":{"entity":"caption","source":"job","ids":["0193…","0193…"]},"requestId":null}',
      }),
    },
  },
};

/** JobEvent and DataEvent, the `data:` of the event streams, from the schemas the tRPC subscriptions are typed by. */
function eventSchemas(): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const schema of [jobEvent, dataEvent]) {
    Object.assign(out, z.toJSONSchema(schema, { io: 'output', unrepresentable: 'any' }).$defs);
  }
  return JSON.parse(JSON.stringify(out).replaceAll('"#/$defs/', '"#/components/schemas/')) as Record<string, unknown>;
}

/** Tag descriptions; a tag an operation uses that is missing here still gets listed, with a generic description. */
const TAG_DESCRIPTIONS: Record<string, string> = {
  batch: 'The batch caption queue: create jobs of (image, perspective) items, follow, cancel, reorder, archive, retry.',
  'batch-internal': 'Internal endpoints for external executors (item updates). Need the internal token when INTERNAL_TOKEN is set.',
  workspace: 'Import the graphcap workspace (perspective library and dataset folders).',
  images: 'Images registered from the workspace, with their metadata and captions.',
  datasets: 'Datasets (folders of images) and their membership.',
  perspectives: 'Perspectives: the ways an image is described (art critic, graph caption, storytelling ...).',
  captions: 'Captions: the structured result of one perspective on one image.',
  events: 'Data change events: what happened to images, datasets, perspectives, captions and providers, live.',
  operations: 'Health of the service, and what a token allows (always open, no token needed).',
};

const BEARER = 'bearerAuth';
const bearerScheme = {
  type: 'http',
  scheme: 'bearer',
  description:
    'Needed only when the service is started with API_TOKEN or INTERNAL_TOKEN (then every /api request needs one; ' +
    'the internal item endpoint needs INTERNAL_TOKEN when that is set). API_READ_TOKEN opens reads only: ' +
    'changes answer 403 to it. A service without tokens is open. GET /api/access says what a token allows.',
};
/**
 * The bearer token is optional: `{}` is the anonymous alternative of an open service. It is set once
 * at the root (operations inherit it), which generators read as "a token may be given".
 */
const optionalBearer: Record<string, string[]>[] = [{ [BEARER]: [] }, {}];

const healthOperation = (operationId: string, summary: string) => ({
  get: {
    operationId,
    summary,
    description:
      'Always open (no token). 200 when the database answers, 503 otherwise: fit for load balancer checks. The Inference ' +
      'Bridge and the workspace are reported, and their troubles listed in `warnings`, but do not fail it: the API works without them.',
    tags: ['operations'],
    security: [],
    responses: {
      '200': {
        description: 'The service and its database are up.',
        content: { 'application/json': { schema: { $ref: '#/components/schemas/Health' } } },
      },
      '503': {
        description: 'The database does not answer.',
        content: {
          'application/json': {
            schema: { $ref: '#/components/schemas/Health' },
            example: { ...HEALTH_EXAMPLE, status: 'unavailable', database: 'unavailable' },
          },
        },
      },
    },
  },
});

const HEALTH_EXAMPLE = {
  status: 'ok',
  service: 'graphcap-data-service',
  version: '0.1.0',
  timestamp: '2026-12-06T12:00:00.000Z',
  database: 'ok',
  pools: { api: { size: 10, inUse: 1, waiting: 0 }, workers: { size: 10, inUse: 2, waiting: 0 } },
  bridge: { state: 'ok', url: 'http://inference-bridge:32100', checkedAt: '2026-12-06T11:59:50.000Z', detail: null, unknownPerspectives: [] },
  workspace: { path: '/workspace', state: 'ok' },
  warnings: [],
  uptimeSeconds: 3600,
};

const healthPath: OpenAPIObject['paths'] = {
  '/health': healthOperation('health', 'Health of the service, its database, bridge and workspace'),
  // Where graphcap studio probes its data service.
  '/api/health': healthOperation('apiHealth', 'Health, where graphcap studio looks for it (the same answer as /health)'),
};

const healthSchema = {
  type: 'object',
  description: 'Health of the service, in graphcap’s shape (status, service, version, timestamp) with what it depends on.',
  required: ['status', 'service', 'version', 'timestamp', 'database', 'pools', 'bridge', 'workspace', 'warnings', 'uptimeSeconds'],
  properties: {
    status: { type: 'string', enum: ['ok', 'unavailable'], description: '`ok` when the service can serve requests.' },
    service: { type: 'string', const: 'graphcap-data-service' },
    version: { type: 'string', description: 'The service’s version.' },
    timestamp: { type: 'string', format: 'date-time' },
    database: { type: 'string', enum: ['ok', 'unavailable'], description: 'Whether PostgreSQL answered a ping.' },
    pools: {
      type: 'object',
      description: 'This process’s database connections: the API’s pool and the background work’s (dispatcher, leases, notifier).',
      required: ['api', 'workers'],
      properties: Object.fromEntries(
        ['api', 'workers'].map((name) => [
          name,
          {
            type: 'object',
            required: ['size', 'inUse', 'waiting'],
            properties: {
              size: { type: 'integer', description: 'Connections at most.' },
              inUse: { type: 'integer', description: 'Connections checked out now.' },
              waiting: { type: 'integer', description: 'Queries waiting for a connection (saturation).' },
            },
          },
        ]),
      ),
    },
    bridge: {
      description: 'The Inference Bridge as the last check saw it; null without INFERENCE_BRIDGE_URL.',
      oneOf: [
        { type: 'null' },
        {
          type: 'object',
          required: ['state', 'url', 'checkedAt', 'detail', 'unknownPerspectives'],
          properties: {
            state: { type: 'string', enum: ['unknown', 'ok', 'unreachable', 'incompatible'], description: 'incompatible: no items are dispatched.' },
            url: { type: 'string', description: 'The address checked, without credentials.' },
            checkedAt: { type: ['string', 'null'], format: 'date-time' },
            detail: { type: ['string', 'null'], description: 'Why it is not ok.' },
            unknownPerspectives: { type: 'array', items: { type: 'string' }, description: 'Enabled perspectives the bridge does not list (restart it).' },
          },
        },
      ],
    },
    workspace: {
      type: 'object',
      required: ['path', 'state'],
      properties: {
        path: { type: 'string' },
        state: { type: 'string', enum: ['ok', 'empty', 'missing'], description: 'empty: no datasets and no perspectives.' },
      },
    },
    warnings: { type: 'array', items: { type: 'string' }, description: 'What limits the service without failing it (bridge, workspace).' },
    uptimeSeconds: { type: 'integer', minimum: 0, description: 'Seconds since the process started.' },
  },
  example: HEALTH_EXAMPLE,
};

type Response = { description?: string; content?: Record<string, unknown> };

/**
 * `method path` of every operation that changes state, which the read-only token may not call: the
 * mutations, less those marked readsOnly (src/trpc.ts applies the same rule).
 */
function writeOperations(): Set<string> {
  const writes = new Set<string>();
  for (const procedure of Object.values(appRouter._def.procedures)) {
    const def = (procedure as { _def: { type: string; meta?: Meta } })._def;
    const openapi = def.meta?.openapi;
    if (def.type === 'mutation' && openapi && !def.meta?.readsOnly) writes.add(`${openapi.method.toLowerCase()} ${openapi.path}`);
  }
  return writes;
}

/** Paths under /api that answer without a token (src/http/auth.ts). */
const OPEN_PATHS = new Set(['/api/access']);
type Operation = {
  tags?: string[];
  requestBody?: { content?: Record<string, { schema?: { $ref?: string; type?: unknown; additionalProperties?: unknown } }> };
  security?: unknown[];
  responses?: Record<string, Response>;
  parameters?: { description?: string; schema?: { description?: string } }[];
};

export function buildOpenApiDocument(): OpenAPIObject {
  const doc = generateOpenApiDocument(appRouter, {
    title: 'graphcap Data Service',
    version: API_VERSION,
    description:
      'Data store of graphcap (images, datasets, perspectives, captions) and orchestrator of its batch caption jobs. ' +
      'Every REST operation is also a tRPC procedure at /api/trpc. Errors are RFC 9457 problem details ' +
      '(`application/problem+json`). Bearer tokens are optional: they are needed only when the service is ' +
      'started with API_TOKEN or INTERNAL_TOKEN.',
    contact: { name: 'graphcap', url: 'https://github.com/Open-Model-Initiative/graphcap' },
    baseUrl: '/',
    securitySchemes: { [BEARER]: bearerScheme as never },
  });
  doc.servers = [{ url: '/', description: 'The service that serves this document.' }];
  doc.security = optionalBearer;
  // trpc-to-openapi describes errors with its own shapes (error.NOT_FOUND ...); the REST face sends
  // problem details instead, so those are replaced by one Problem schema.
  const schemas = Object.fromEntries(
    Object.entries(doc.components?.schemas ?? {}).filter(([name]) => !name.startsWith('error.')),
  );
  doc.paths = { ...doc.paths, ...eventsPath, ...healthPath };
  type Schemas = NonNullable<OpenAPIObject['components']>['schemas'];
  doc.components = { ...doc.components, schemas: { ...schemas, ...eventSchemas(), Problem: problemSchema, Health: healthSchema } as Schemas };
  const tags: string[] = [];
  const writes = writeOperations();
  for (const [path, operations] of Object.entries(doc.paths ?? {})) {
    for (const [method, operation] of Object.entries(operations as Record<string, Operation>)) {
      for (const tag of operation.tags ?? []) if (!tags.includes(tag)) tags.push(tag);
      // Every body is a strict object (unknown keys are a 400); the generator loses that where a
      // schema is refined or the body is split from path parameters. test/openapi.test.ts checks both sides agree.
      const body = operation.requestBody?.content?.['application/json']?.schema;
      if (body && !body.$ref && body.type === 'object') body.additionalProperties = false;
      const responses = (operation.responses ??= {});
      if (path.startsWith('/api/')) {
        delete operation.security;
        if (!OPEN_PATHS.has(path)) {
          responses['401'] ??= { description: 'Missing or wrong bearer token, when the service is started with a token' };
        }
      }
      if (writes.has(`${method} ${path}`)) {
        responses['403'] ??= { description: 'The read-only token (API_READ_TOKEN) may not change anything: this needs the API token' };
      }
      for (const [status, response] of Object.entries(responses)) {
        if (Number(status) >= 400 && path.startsWith('/api/')) {
          response.content = { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } };
        }
      }
      // A query parameter's description sits on its schema; show it on the parameter, where Swagger UI looks.
      for (const parameter of operation.parameters ?? []) {
        if (!parameter.description && parameter.schema?.description) parameter.description = parameter.schema.description;
      }
      // Keep the responses in status order (200 first), whatever order they were added in.
      operation.responses = Object.fromEntries(Object.entries(responses).sort(([a], [b]) => Number(a) - Number(b)));
    }
  }
  doc.tags = tags.map((name) => ({ name, description: TAG_DESCRIPTIONS[name] ?? `Operations on ${name}.` }));
  return doc;
}
