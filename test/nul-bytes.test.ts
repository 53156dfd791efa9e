/**
 * PostgreSQL text cannot hold U+0000. A NUL character anywhere in a request's input (a filter, a
 * body's string, nested or in a key) is a 400 naming where it is, on both faces, never a 500 from
 * the database; nothing is stored.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, startTestService, type TestService } from './helpers/service.js';

let svc: TestService;
beforeAll(async () => {
  svc = await startTestService();
});
afterAll(async () => svc?.close());

const NUL = '\u0000';

describe('a NUL character in the input', () => {
  it.each([
    ['GET', `/api/images?pathContains=a${encodeURIComponent(NUL)}b`, 'pathContains', undefined],
    ['GET', `/api/captions?model=${encodeURIComponent(NUL)}`, 'model', undefined],
    ['GET', `/api/perspectives?nameContains=${encodeURIComponent(NUL)}`, 'nameContains', undefined],
    ['GET', `/api/datasets?nameContains=x${encodeURIComponent(NUL)}`, 'nameContains', undefined],
    ['GET', `/api/perspectives/batch/list?userId=${encodeURIComponent(NUL)}`, 'userId', undefined],
    ['POST', '/api/datasets', 'description', { name: 'nul', description: `a${NUL}` }],
    ['POST', '/api/perspectives/batch/create', 'imagePaths.0', { type: 'MULTI_PERSPECTIVE', imagePaths: [`datasets/os_img/x${NUL}.jpg`], perspectives: ['art_critic'], config: { provider: 'gemini', model: 'm' } }],
  ])('%s %s is a 400 naming %s', async (method, route, field, body) => {
    const answer = await api(svc.url, method, route, body);
    expect(answer.status, JSON.stringify(answer.body)).toBe(400);
    expect(answer.body.errors).toContainEqual(expect.objectContaining({ path: field }));
    expect(answer.body.detail).toContain('NUL');
  });

  it('is found in nested values and keys, and nothing is stored', async () => {
    const image = (await api(svc.url, 'GET', '/api/images?limit=1')).body.items[0];
    const perspective = (await api(svc.url, 'GET', '/api/perspectives?limit=1')).body.items[0];
    const before = (await svc.pool.query('select count(*)::int as n from core_schema.captions')).rows[0].n;
    const nested = await api(svc.url, 'POST', '/api/captions', { imageId: image.imageId, perspectiveId: perspective.perspectiveId, result: { tags: [{ tag: `o${NUL}wl` }] } });
    expect(nested.status).toBe(400);
    expect(nested.body.errors).toContainEqual(expect.objectContaining({ path: 'result.tags.0.tag' }));
    const key = await api(svc.url, 'POST', '/api/captions', { imageId: image.imageId, perspectiveId: perspective.perspectiveId, result: { [`k${NUL}`]: 1 } });
    expect(key.status).toBe(400);
    expect(key.body.errors[0].path).toMatch(/^result\./);
    expect((await svc.pool.query('select count(*)::int as n from core_schema.captions')).rows[0].n).toBe(before);
  });

  it('is a BAD_REQUEST on the tRPC face', async () => {
    const input = encodeURIComponent(JSON.stringify({ pathContains: `a${NUL}` }));
    const answer = await api(svc.url, 'GET', `/api/trpc/images.list?input=${input}`);
    expect(answer.status).toBe(400);
    expect(answer.body.error.data.code).toBe('BAD_REQUEST');
    expect(answer.body.error.data.errors).toContainEqual(expect.objectContaining({ path: 'pathContains' }));
  });
});
