/**
 * New files seen at once: with the watcher on, a file copied into a dataset folder (or a new
 * subfolder, or a new dataset folder) is listed within seconds without a sync call, and a removed
 * one leaves its dataset. A job naming a file that is there but not registered yet takes it in.
 */
import { copyFile, mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CONFIG, IMAGES } from '../helpers/fixtures.js';
import { getOk, qs } from '../helpers/data.js';
import { waitFor } from '../helpers/jobs.js';
import { api, startTestService, type TestService } from '../helpers/service.js';

let svc: TestService;
const ws = (p: string) => path.join(svc.workspace, p);
const listed = async (pathContains: string) => (await getOk(svc.url, `/api/images${qs({ pathContains })}`)).items as { path: string; datasetIds: string[] }[];

beforeAll(async () => {
  svc = await startTestService({ env: { WORKSPACE_WATCH: 'true' } });
});
afterAll(async () => svc?.close());

describe('the workspace watcher', () => {
  it('lists a file copied into a dataset folder within seconds, and takes a removed one out of its dataset', async () => {
    await copyFile(ws(IMAGES[0]), ws('datasets/os_img/copied-in.jpg'));
    const [image] = await waitFor('the copied file', async () => { const l = await listed('copied-in'); return l.length === 1 && l; }, 10_000, 100);
    const dataset = (await getOk(svc.url, `/api/datasets${qs({ name: 'os_img' })}`)).items[0];
    expect(image).toMatchObject({ path: 'datasets/os_img/copied-in.jpg', datasetIds: [dataset.datasetId] });

    await rm(ws('datasets/os_img/copied-in.jpg'));
    await waitFor('it to leave the dataset', async () => (await listed('copied-in'))[0]?.datasetIds.length === 0, 10_000, 100);
  });

  it('follows new subfolders and new dataset folders', async () => {
    await mkdir(ws('datasets/os_img/later'));
    await copyFile(ws(IMAGES[1]), ws('datasets/os_img/later/deep.webp'));
    await waitFor('the file in the new subfolder', async () => (await listed('later/deep')).length === 1, 10_000, 100);

    await mkdir(ws('datasets/local/fresh'), { recursive: true });
    await copyFile(ws(IMAGES[2]), ws('datasets/local/fresh/one.webp'));
    const fresh = await waitFor('the new dataset', async () => (await getOk(svc.url, `/api/datasets${qs({ name: 'fresh' })}`)).items[0], 10_000, 100);
    await waitFor('its image', async () => (await getOk(svc.url, `/api/datasets/${fresh.datasetId}/images`)).total === 1, 10_000, 100);
  });
});

describe('a file that is there but not registered', () => {
  let quiet: TestService;
  beforeAll(async () => {
    quiet = await startTestService();
  });
  afterAll(async () => quiet?.close());

  it('is taken in when a job names it, instead of refusing the job', async () => {
    await copyFile(path.join(quiet.workspace, IMAGES[3]), path.join(quiet.workspace, 'datasets/os_img/just-copied.jpg'));
    const created = await api(quiet.url, 'POST', '/api/perspectives/batch/create', {
      type: 'MULTI_PERSPECTIVE',
      perspectives: ['art_critic'],
      imagePaths: ['/workspace/datasets/os_img/just-copied.jpg', IMAGES[0]],
      config: CONFIG,
    });
    expect(created.status, JSON.stringify(created.body)).toBe(200);
    expect(created.body.totalImages).toBe(2);
    const image = (await getOk(quiet.url, `/api/images${qs({ pathContains: 'just-copied' })}`)).items[0];
    expect(image).toMatchObject({ path: 'datasets/os_img/just-copied.jpg', format: 'jpg' });
    expect(image.datasetIds).toHaveLength(1);
    // A file that is not there is still refused, naming it.
    const refused = await api(quiet.url, 'POST', '/api/perspectives/batch/create', {
      type: 'MULTI_PERSPECTIVE',
      perspectives: ['art_critic'],
      imagePaths: ['datasets/os_img/never-there.jpg'],
      config: CONFIG,
    });
    expect(refused.status).toBe(400);
    expect(refused.body.errors).toEqual([{ path: 'imagePaths.0', message: expect.stringMatching(/^unknown image "datasets\/os_img\/never-there.jpg"/) }]);
  });
});
