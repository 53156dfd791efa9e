import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OPENAPI_FILE, renderOpenApiDocument } from '../scripts/write-openapi.js';
import { api, startTestService, type TestService } from './helpers/service.js';

let svc: TestService;
beforeAll(async () => {
  svc = await startTestService();
});
afterAll(async () => svc?.close());

const BATCH = [
  ['post', '/create'],
  ['get', '/list'],
  ['get', '/status/{jobId}'],
  ['post', '/cancel/{jobId}'],
  ['post', '/reorder'],
  ['post', '/analyze-images'],
  ['post', '/archive/{jobId}'],
  ['post', '/restore/{jobId}'],
  ['post', '/retry-failed/{jobId}'],
  ['get', '/statistics'],
  ['post', '/items/{itemId}'],
  ['get', '/items/{jobId}/list'],
  ['get', '/items/{jobId}/failed'],
] as const;

type Operation = {
  operationId?: string;
  summary?: string;
  parameters?: unknown[];
  requestBody?: { content: Record<string, { schema: unknown }> };
  responses: Record<string, { content?: Record<string, { schema: unknown }> }>;
};

describe('the OpenAPI document', () => {
  it('is committed and matches the routers (run `npm run openapi` after changing a schema)', async () => {
    expect(await readFile(OPENAPI_FILE, 'utf8')).toBe(renderOpenApiDocument());
  });

  it('is what the service serves', async () => {
    const served = await api(svc.url, 'GET', '/openapi.json');
    expect(served.status).toBe(200);
    expect(served.body).toEqual(JSON.parse(renderOpenApiDocument()));
  });

  it('holds the 13 batch paths with request and response schemas and problem errors', () => {
    const doc = JSON.parse(renderOpenApiDocument()) as { paths: Record<string, Record<string, Operation>> };
    for (const [method, path] of BATCH) {
      const operation = doc.paths[`/api/perspectives/batch${path}`]?.[method];
      expect(operation, `${method} ${path}`).toBeDefined();
      expect(operation!.operationId).toBeTruthy();
      expect(operation!.summary).toBeTruthy();
      const hasInput = operation!.requestBody?.content['application/json']?.schema ?? operation!.parameters?.length;
      expect(hasInput, `${method} ${path} input`).toBeTruthy();
      expect(operation!.responses['200']?.content?.['application/json']?.schema).toBeDefined();
      const errors = Object.entries(operation!.responses).filter(([status]) => Number(status) >= 400);
      expect(errors.length).toBeGreaterThan(0);
      for (const [, response] of errors) {
        expect(response.content?.['application/problem+json']?.schema).toEqual({ $ref: '#/components/schemas/Problem' });
      }
    }
  });
});

describe('the document and the server agree on unknown body keys', () => {
  it('every request body is additionalProperties: false, and the server refuses an unknown key on each', async () => {
    const doc = JSON.parse(await readFile(OPENAPI_FILE, 'utf8')) as {
      paths: Record<string, Record<string, Operation>>;
      components: { schemas: Record<string, { additionalProperties?: unknown }> };
    };
    const checked: string[] = [];
    for (const [path, operations] of Object.entries(doc.paths)) {
      for (const [method, operation] of Object.entries(operations)) {
        const schema = operation.requestBody?.content['application/json']?.schema as { $ref?: string; additionalProperties?: unknown } | undefined;
        if (!schema) continue;
        const resolved = schema.$ref ? doc.components.schemas[schema.$ref.split('/').at(-1)!]! : schema;
        expect(resolved.additionalProperties, `${method} ${path}`).toBe(false);
        const route = path.replace(/\{[^}]+\}/g, '00000000-0000-4000-8000-000000000000');
        const answer = await api(svc.url, method.toUpperCase(), route, { zzUnknown: 1 });
        expect(answer.status, `${method} ${path}: ${JSON.stringify(answer.body)}`).toBe(400);
        expect(JSON.stringify(answer.body.errors), `${method} ${path}`).toContain('zzUnknown');
        checked.push(`${method} ${path}`);
      }
    }
    expect(checked.length).toBeGreaterThanOrEqual(17);
  });
});

describe('undeclared methods', () => {
  it('on every path of the document, a method it does not declare is a 405 naming the allowed ones', async () => {
    const doc = JSON.parse(await readFile(OPENAPI_FILE, 'utf8')) as { paths: Record<string, Record<string, unknown>> };
    for (const [path, operations] of Object.entries(doc.paths)) {
      const declared = Object.keys(operations).map((m) => m.toUpperCase());
      const method = ['PUT', 'PATCH', 'DELETE', 'POST'].find((m) => !declared.includes(m))!;
      const route = path.replace(/\{[^}]+\}/g, '00000000-0000-4000-8000-000000000000');
      const answer = await fetch(`${svc.url}${route}`, { method });
      expect(answer.status, `${method} ${path}`).toBe(405);
      const allow = answer.headers.get('allow')!.split(', ');
      for (const m of declared) expect(allow, `${method} ${path}`).toContain(m);
      expect(((await answer.json()) as { code: string }).code).toBe('METHOD_NOT_SUPPORTED');
    }
    // A path that is no operation's is still a 404.
    expect((await fetch(`${svc.url}/api/nothing-here`, { method: 'PUT' })).status).toBe(404);
  });
});

describe('Swagger UI', () => {
  it('is served at /docs from local assets only', async () => {
    const page = await fetch(`${svc.url}/docs/`);
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toContain('swagger-ui');
    const assets = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
    expect(assets.length).toBeGreaterThan(0);
    for (const asset of assets) {
      expect(asset, 'no CDN').not.toMatch(/^(https?:)?\/\//);
      const response = await fetch(new URL(asset, `${svc.url}/docs/`));
      expect(response.status, asset).toBe(200);
    }
    const init = await (await fetch(`${svc.url}/docs/swagger-ui-init.js`)).text();
    expect(init).toContain('/api/perspectives/batch/create');
  });
});
