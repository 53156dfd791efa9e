/** Data the batch tests build on: the fixture dataset and helpers to create jobs. */
import { sql } from 'drizzle-orm';
import type { Db } from '../../src/db/client.js';
import { api } from './service.js';

export const DATASET = 'os_img';
export const IMAGES: readonly string[] & { 0: string; 1: string; 2: string; 3: string; 4: string } = [
  'datasets/os_img/big-buddha-5587706_1280.jpg',
  'datasets/os_img/childs-hand-8845806_640.webp',
  'datasets/os_img/girl-8435339_640.webp',
  'datasets/os_img/highland-cow-8972000_640.jpg',
  'datasets/os_img/new-york-7781184_640.jpg',
  'datasets/os_img/universe-8153526_640.jpg',
  'datasets/os_img/ural-owl-6676441_640.jpg',
];
export const CONFIG = { provider: 'gemini', model: 'gemini-2.0-flash-exp' };

export async function createJob(url: string, body: Record<string, unknown>) {
  const response = await api(url, 'POST', '/api/perspectives/batch/create', {
    type: 'MULTI_PERSPECTIVE',
    perspectives: ['art_critic'],
    imagePaths: IMAGES.slice(0, 2),
    config: CONFIG,
    ...body,
  });
  if (response.status !== 200) throw new Error(`create failed: ${response.status} ${JSON.stringify(response.body)}`);
  return response.body as { jobId: string; totalImages: number; status: string; [key: string]: unknown };
}

export async function countRows(db: Db, table: string): Promise<number> {
  const { rows } = await db.execute<{ n: number }>(sql.raw(`select count(*)::int as n from ${table}`));
  return rows[0]!.n;
}

/** The job's item ids in order. */
export async function itemIds(db: Db, jobId: string): Promise<string[]> {
  const { rows } = await db.execute<{ id: string }>(
    sql`select id from job_queue.job_items where job_id = ${jobId} order by seq`,
  );
  return rows.map((r) => r.id);
}

/** Drives an item to completed (or failed) through the internal item endpoint, as an executor would. */
export async function finishItem(url: string, itemId: string, outcome: 'completed' | 'failed', extra: Record<string, unknown> = {}) {
  const route = `/api/perspectives/batch/items/${itemId}`;
  const running = await api(url, 'POST', route, { status: 'running' });
  if (running.status !== 200) throw new Error(`running failed: ${JSON.stringify(running.body)}`);
  const body =
    outcome === 'completed'
      ? { status: 'completed', result: { caption: `caption of ${itemId}` }, processingTime: 120, ...extra }
      : { status: 'failed', error: 'bridge said no', processingTime: 80, ...extra };
  const done = await api(url, 'POST', route, body);
  if (done.status !== 200) throw new Error(`${outcome} failed: ${JSON.stringify(done.body)}`);
  return done.body;
}

/** A job's own provider_config (camelCase, as graphcap studio writes it) with the given key. */
export const inlineProvider = (apiKey: string) => ({ kind: 'openai', environment: 'local', baseUrl: 'http://127.0.0.1:9/v1', apiKey });
