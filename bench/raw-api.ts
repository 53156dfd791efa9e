/**
 * The baseline of the bench's API figure: a bare express + pg (drizzle) process answering the same
 * two reads as the service, with the same query functions from src/db, and no tRPC, OpenAPI layer,
 * validation, output mapping, middleware or logging. DATABASE_URL, PORT; prints "listening" when up.
 */
import express from 'express';
import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import type { Db } from '../src/db/client.js';
import { listItems } from '../src/db/items.js';
import { getJob, listJobs } from '../src/db/jobs.js';
import * as schema from '../src/db/schema.js';

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: Number(process.env.DB_POOL_SIZE ?? 10) });
const db = drizzle(pool, { schema }) as unknown as Db;
const app = express();

app.get('/api/perspectives/batch/status/:jobId', async (req, res) => {
  const jobId = req.params.jobId;
  const job = await getJob(db, jobId);
  const items = await listItems(db, jobId, { page: 1, limit: 20 }, job);
  res.json({ job, items: { ...items, page: 1, limit: 20 } });
});

app.get('/api/perspectives/batch/list', async (_req, res) => {
  const page = await listJobs(db, { archived: false, sort: 'queue', order: 'asc', page: 1, limit: 20 } as Parameters<typeof listJobs>[1]);
  res.json({ ...page, page: 1, limit: 20 });
});

const server = app.listen(Number(process.env.PORT), '127.0.0.1', () => process.stdout.write('listening\n'));
process.once('SIGTERM', () => {
  server.close();
  void pool.end().then(() => process.exit(0));
});
