/**
 * The `workspace` part of `npm run bench` (issue 16 item 5): a graphcap workspace at scale.
 *
 * 1. First sync of `images` images in `folders` folders (20 datasets of nested subfolders), each
 *    folder with the captions.jsonl of the 7 perspectives the example workspace has captions for:
 *    time, images/s, the service's CPU and peak RSS, beside a floor measured in the same run: a
 *    plain script (bench/workspace-floor.mjs) reading and hashing the same images and parsing the
 *    same caption lines.
 * 2. Re-sync with nothing changed: time, and whether any image was read, seen from outside the
 *    service (the images' access times, reset before the re-sync; relatime then records any read).
 * 3. The watcher at one folder of `watchFiles` files: RSS while watching it, and a burst of
 *    `watchBurst` files copied in: time until all are dataset members, RSS meanwhile.
 *
 * Images are hard links of the example workspace's seven images (their sizes, 32-199 KB), so the
 * files are in the page cache: both sides are measured warm, as CPU and syscalls, not disk.
 */
import { spawn } from 'node:child_process';
import { cp, link, mkdir, mkdtemp, readFile, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { cpuMs, readProcIo, readProcStatus } from './proc.js';

const EXAMPLE = fileURLToPath(new URL('../examples/workspace', import.meta.url));
const EXAMPLE_DATASET = 'datasets/os_img';
const FLOOR_SCRIPT = fileURLToPath(new URL('./workspace-floor.mjs', import.meta.url));
/** ext4 allows 65,000 links to a file: a new copy of each source image every this many links. */
const LINKS_PER_SOURCE = 30_000;
const DATASETS = 20;

export interface WorkspaceSizes {
  images: number;
  folders: number;
  watchFiles: number;
  watchBurst: number;
}

interface RunningService {
  url: string;
  child: { pid?: number };
}

const getJson = async (url: string): Promise<unknown> => {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`GET ${url}: ${response.status} ${(await response.text()).slice(0, 300)}`);
  return response.json();
};

const postJson = async (url: string, body: unknown): Promise<{ jobId: string }> => {
  const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (!response.ok) throw new Error(`POST ${url}: ${response.status} ${(await response.text()).slice(0, 300)}`);
  return (await response.json()) as { jobId: string };
};

/** Captions waiting to be written back, from the service's /metrics. */
async function pendingWritebacks(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const value = /^graphcap_caption_writebacks_pending (\d+)/m.exec(text)?.[1];
  if (value === undefined) throw new Error('no graphcap_caption_writebacks_pending in /metrics');
  return Number(value);
}

/** What the part needs from the bench (bench/run.ts). */
export interface WorkspaceBenchDeps {
  start(env: Record<string, string>, nodeFlags?: string[]): Promise<RunningService>;
  stop(s: RunningService): Promise<void>;
  /** A new, empty database; its URL. */
  emptyDatabase(suffix: string): Promise<string>;
  longPost(url: string): Promise<unknown>;
  add(key: string, value: number): void;
  log(message: string): void;
  /** `--cpu-prof`: the first sync's service runs under `node --cpu-prof`, summarised by this. */
  summariseProfile?: (dir: string, label: string) => Promise<void>;
}

interface SyncAnswer {
  datasets: { name: string; added: number; updated: number; unchanged: number; problems: unknown[]; captions: { read: number; imported: number; problems: unknown[] } }[];
}

export async function workspaceBench(sizes: WorkspaceSizes, deps: WorkspaceBenchDeps): Promise<Record<string, unknown>> {
  const { add, log } = deps;
  const made: string[] = [];
  try {
    // 1. First sync, beside the floor.
    const ws = await makeScaleWorkspace(sizes.images, sizes.folders);
    made.push(ws.root);
    log(`workspace part: ${ws.images} images in ${ws.folders} folders, ${ws.captionLines} caption lines, ${(ws.imageBytes / 2 ** 30).toFixed(2)} GiB of images`);
    const floor = await runFloor(ws.root);
    if (floor.files !== ws.images || floor.lines !== ws.captionLines) {
      throw new Error(`floor read ${floor.files} images and ${floor.lines} lines, not ${ws.images} and ${ws.captionLines}`);
    }
    add('ws_floor_s', floor.ms / 1000);
    add('ws_floor_fps', (floor.files * 1000) / floor.ms);
    add('ws_floor_rss', floor.hwmKb / 1024);

    const env = { WORKSPACE_PATH: ws.root, WORKSPACE_WATCH: 'false', WORKSPACE_RESCAN_SECONDS: '0' };
    const profileDir = deps.summariseProfile ? await mkdtemp(path.join(os.tmpdir(), 'graphcap-bench-prof-')) : undefined;
    const s = await deps.start({ ...env, DATABASE_URL: await deps.emptyDatabase('ws') }, profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : []);
    const pid = s.child.pid!;
    const cpuBefore = await cpuMs(pid);
    const started = performance.now();
    const first = (await deps.longPost(`${s.url}/api/workspace/sync`)) as SyncAnswer;
    const firstMs = performance.now() - started;
    const cpu = (await cpuMs(pid)) - cpuBefore;
    const { hwmKb } = await readProcStatus(pid);
    const mine = first.datasets.filter((d) => d.name.startsWith('ws_'));
    const added = sum(mine.map((d) => d.added));
    const captions = sum(mine.map((d) => d.captions.imported));
    if (added !== ws.images || captions !== ws.captionLines) {
      throw new Error(`first sync registered ${added} images and ${captions} captions, not ${ws.images} and ${ws.captionLines}`);
    }
    add('ws_first_s', firstMs / 1000);
    add('ws_first_fps', (ws.images * 1000) / firstMs);
    add('ws_first_ratio', firstMs / floor.ms);
    add('ws_first_cpu_ratio', cpu / floor.cpuMs);
    add('ws_first_rss', hwmKb / 1024);
    log(`workspace first sync ${(firstMs / 1000).toFixed(1)} s (floor ${(floor.ms / 1000).toFixed(1)} s), service CPU ${(cpu / 1000).toFixed(1)} s, peak RSS ${(hwmKb / 1024).toFixed(0)} MB`);

    // 2. Re-sync with nothing changed: no image read. Access times set before each file's
    // modification time: with relatime (or strictatime) any read of an image moves its inode's.
    const accessed = new Date(Date.now() - 86_400_000);
    for (const source of ws.sources) {
      const info = await stat(source);
      await utimes(source, new Date(Math.min(accessed.getTime(), info.mtimeMs - 1000)), info.mtime);
    }
    const atimes = await Promise.all(ws.sources.map(async (f) => (await stat(f)).atimeMs));
    const ioBefore = await readProcIo(pid);
    const again = performance.now();
    const second = (await deps.longPost(`${s.url}/api/workspace/sync`)) as SyncAnswer;
    const resyncMs = performance.now() - again;
    const ioAfter = await readProcIo(pid);
    await deps.stop(s);
    if (profileDir) {
      await deps.summariseProfile!(profileDir, 'workspace first sync and re-sync');
      await rm(profileDir, { recursive: true, force: true });
    }
    const secondMine = second.datasets.filter((d) => d.name.startsWith('ws_'));
    const changed = sum(secondMine.map((d) => d.added + d.updated));
    const captionFilesRead = sum(secondMine.map((d) => d.captions.read));
    if (changed !== 0 || captionFilesRead !== 0) throw new Error(`re-sync with nothing changed: ${changed} images and ${captionFilesRead} caption files taken as changed`);
    const read = (await Promise.all(ws.sources.map(async (f, i) => (await stat(f)).atimeMs !== atimes[i]))).filter(Boolean).length;
    // The control: this file system records reads (a noatime mount would not, and prove nothing).
    await readFile(ws.sources[0]!);
    const recorded = (await stat(ws.sources[0]!)).atimeMs !== atimes[0];
    if (!recorded) log('workspace re-sync: this file system does not record reads (noatime): image reads unknown');
    add('ws_resync_s', resyncMs / 1000);
    add('ws_resync_images_read', recorded ? read : NaN);
    add('ws_resync_read_mb', (ioAfter.rchar - ioBefore.rchar) / 2 ** 20);
    log(`workspace re-sync ${(resyncMs / 1000).toFixed(2)} s; image inodes read ${recorded ? read : 'unknown'} of ${ws.sources.length}`);
    await rm(ws.root, { recursive: true, force: true });
    made.pop();

    // 3. The watcher at one big folder.
    const big = await makeBigFolderWorkspace(sizes.watchFiles);
    made.push(big.root);
    const watchDatabase = await deps.emptyDatabase('watch');
    const w = await deps.start({ WORKSPACE_PATH: big.root, WORKSPACE_WATCH: 'true', WORKSPACE_RESCAN_SECONDS: '0', DATABASE_URL: watchDatabase });
    const watchPid = w.child.pid!;
    const syncStarted = performance.now();
    await deps.longPost(`${w.url}/api/workspace/sync`);
    add('ws_watch_sync_s', (performance.now() - syncStarted) / 1000);
    await sleep(1000);
    add('ws_watch_rss', (await readProcStatus(watchPid)).rssKb / 1024);
    let peak = 0;
    const sampler = setInterval(() => void readProcStatus(watchPid).then((p) => (peak = Math.max(peak, p.rssKb || 0))), 50);
    const burstStarted = performance.now();
    for (let i = 0; i < sizes.watchBurst; i += 1) await link(big.source, path.join(big.folder, `new-${String(i).padStart(6, '0')}.jpg`));
    const copiedMs = performance.now() - burstStarted;
    const expected = sizes.watchFiles + sizes.watchBurst;
    for (let members = 0; members < expected; ) {
      if (performance.now() - burstStarted > 120_000) throw new Error(`watcher: ${members} of ${expected} files registered after 120 s`);
      await sleep(50);
      members = await datasetSize(w.url, big.dataset);
    }
    const seenMs = performance.now() - burstStarted;
    clearInterval(sampler);
    add('ws_watch_burst_s', seenMs / 1000);
    add('ws_watch_peak_rss', peak / 1024);
    log(`watcher: ${sizes.watchBurst} files copied in ${copiedMs.toFixed(0)} ms, all listed ${(seenMs / 1000).toFixed(2)} s after the first; RSS peak ${(peak / 1024).toFixed(0)} MB`);
    await deps.stop(w);

    // 4. Write-back: a job over that folder, its captions written into one captions.jsonl.
    const wb = await deps.start({
      WORKSPACE_PATH: big.root,
      WORKSPACE_WATCH: 'false',
      WORKSPACE_RESCAN_SECONDS: '0',
      DATABASE_URL: watchDatabase,
      MAX_CONCURRENT_ITEMS: '16',
      CAPTION_EXPORT_INTERVAL_MS: '1000',
    });
    const wbCpu = await cpuMs(wb.child.pid!);
    const jobStarted = performance.now();
    const job = await postJson(`${wb.url}/api/perspectives/batch/create`, {
      type: 'DATASET_PERSPECTIVE',
      datasetName: big.dataset,
      perspectives: ['art_critic'],
      config: { provider: 'gemini', model: 'gemini-2.0-flash-exp' },
    });
    let jobMs = 0;
    for (;;) {
      if (performance.now() - jobStarted > 600_000) throw new Error('write-back: the job or its write-back did not end in 10 minutes');
      await sleep(100);
      if (!jobMs) {
        const status = (await getJson(`${wb.url}/api/perspectives/batch/status/${job.jobId}`)) as { job: { status: string } };
        if (status.job.status === 'completed') jobMs = performance.now() - jobStarted;
        else if (!['pending', 'running'].includes(status.job.status)) throw new Error(`write-back job ended ${status.job.status}`);
      }
      if (jobMs && (await pendingWritebacks(wb.url)) === 0) break;
    }
    const writtenMs = performance.now() - jobStarted;
    const captionsWritten = expected;
    const lines = (await readFile(path.join(big.folder, 'analysis/batch_art_critic/captions.jsonl'), 'utf8')).split('\n').filter(Boolean).length;
    if (lines !== captionsWritten) throw new Error(`write-back: ${lines} lines in the captions file, not ${captionsWritten}`);
    const wbCpuMs = (await cpuMs(wb.child.pid!)) - wbCpu;
    await deps.stop(wb);
    add('ws_writeback_job_s', jobMs / 1000);
    add('ws_writeback_s', writtenMs / 1000);
    add('ws_writeback_cps', (captionsWritten * 1000) / writtenMs);
    add('ws_writeback_cpu', wbCpuMs / captionsWritten);
    log(`write-back: ${captionsWritten}-item job ${(jobMs / 1000).toFixed(1)} s, every caption in the file ${(writtenMs / 1000).toFixed(1)} s after the create; service CPU ${(wbCpuMs / captionsWritten).toFixed(2)} ms a caption`);
    return { images: ws.images, folders: ws.folders, captionLines: ws.captionLines, imageBytes: ws.imageBytes, floor, imageInodes: ws.sources.length };
  } finally {
    for (const dir of made) await rm(dir, { recursive: true, force: true });
  }
}

const sum = (values: number[]) => values.reduce((a, b) => a + b, 0);

/** Members of a dataset, as GET /api/datasets?name= gives them. */
async function datasetSize(url: string, name: string): Promise<number> {
  const response = await fetch(`${url}/api/datasets?name=${encodeURIComponent(name)}`);
  if (!response.ok) throw new Error(`GET /api/datasets?name=${name}: ${response.status}`);
  const body = (await response.json()) as { items: { imageCount: number }[] };
  return body.items[0]?.imageCount ?? 0;
}

interface ScaleWorkspace {
  root: string;
  images: number;
  folders: number;
  imageBytes: number;
  captionLines: number;
  /** The distinct image files (inodes) every image is a link of. */
  sources: string[];
}

/**
 * The example workspace's perspective library and config, and `images` images spread over
 * `folders` folders: datasets ws_00..ws_19, each of subfolders part_000..., each subfolder with a
 * captions.jsonl per perspective (a line per image, the example's caption of that perspective).
 */
async function makeScaleWorkspace(images: number, folders: number): Promise<ScaleWorkspace> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'graphcap-bench-scale-'));
  await cp(path.join(EXAMPLE, 'perspective_library'), path.join(root, 'perspective_library'), { recursive: true });
  await cp(path.join(EXAMPLE, 'config'), path.join(root, 'config'), { recursive: true });
  const examples = (await readdir(path.join(EXAMPLE, EXAMPLE_DATASET))).filter((n) => /\.(jpe?g|png|webp)$/.test(n)).sort();
  const templates = await captionTemplates();
  const sources: string[] = [];
  const sizes = new Map<string, number>();
  let imageBytes = 0;
  let captionLines = 0;
  const perFolder = Math.ceil(images / folders);
  let n = 0;
  for (let f = 0; f < folders && n < images; f += 1) {
    const folder = path.join(root, 'datasets', `ws_${String(f % DATASETS).padStart(2, '0')}`, `part_${String(Math.floor(f / DATASETS)).padStart(3, '0')}`);
    await mkdir(folder, { recursive: true });
    const names: string[] = [];
    for (let i = 0; i < perFolder && n < images; i += 1, n += 1) {
      if (n % LINKS_PER_SOURCE === 0) sources.push(...(await copySources(path.join(root, 'sources', String(n / LINKS_PER_SOURCE)), examples, sizes)));
      const from = sources[sources.length - examples.length + (n % examples.length)]!;
      const name = `img-${String(n).padStart(6, '0')}${path.extname(from)}`;
      await link(from, path.join(folder, name));
      imageBytes += sizes.get(from)!;
      names.push(name);
    }
    for (const [perspective, parsed] of templates) {
      const dir = path.join(folder, 'analysis', `batch_${perspective}`);
      await mkdir(dir, { recursive: true });
      const lines = names.map((name) =>
        JSON.stringify({ filename: `./${name}`, config_name: perspective, version: '1', model: 'bench', provider: 'bench', parsed }),
      );
      await writeFile(path.join(dir, 'captions.jsonl'), `${lines.join('\n')}\n`);
      captionLines += lines.length;
    }
  }
  return { root, images: n, folders: Math.ceil(n / perFolder), imageBytes, captionLines, sources };
}

/** A copy of each example image into `dir`, their sizes noted in `sizes`. */
async function copySources(dir: string, examples: string[], sizes: Map<string, number>): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const copies: string[] = [];
  for (const name of examples) {
    const target = path.join(dir, name);
    await cp(path.join(EXAMPLE, EXAMPLE_DATASET, name), target);
    sizes.set(target, (await stat(target)).size);
    copies.push(target);
  }
  return copies;
}

/** Each perspective the example workspace has captions for, with its first caption. */
async function captionTemplates(): Promise<Map<string, unknown>> {
  const analysis = path.join(EXAMPLE, EXAMPLE_DATASET, 'analysis');
  const templates = new Map<string, unknown>();
  for (const batch of (await readdir(analysis)).sort()) {
    if (!batch.startsWith('batch_')) continue;
    const text = await readFile(path.join(analysis, batch, 'captions.jsonl'), 'utf8');
    templates.set(batch.slice('batch_'.length), (JSON.parse(text.split('\n')[0]!) as { parsed: unknown }).parsed);
  }
  return templates;
}

/** One dataset folder of `files` links of one example image (the watcher's worst case: one huge folder), and the example's library and config. */
async function makeBigFolderWorkspace(files: number): Promise<{ root: string; folder: string; dataset: string; source: string }> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'graphcap-bench-watch-'));
  await cp(path.join(EXAMPLE, 'perspective_library'), path.join(root, 'perspective_library'), { recursive: true });
  await cp(path.join(EXAMPLE, 'config'), path.join(root, 'config'), { recursive: true });
  const dataset = 'ws_big';
  const folder = path.join(root, 'datasets', dataset);
  await mkdir(folder, { recursive: true });
  let source = '';
  for (let i = 0; i < files; i += 1) {
    if (i % LINKS_PER_SOURCE === 0) {
      source = path.join(root, `source-${i / LINKS_PER_SOURCE}.jpg`);
      await cp(path.join(EXAMPLE, EXAMPLE_DATASET, 'universe-8153526_640.jpg'), source);
    }
    await link(source, path.join(folder, `img-${String(i).padStart(6, '0')}.jpg`));
  }
  // The burst's files: a source of its own, so its links stay under the limit.
  source = path.join(root, 'source-burst.jpg');
  await cp(path.join(EXAMPLE, EXAMPLE_DATASET, 'universe-8153526_640.jpg'), source);
  return { root, folder, dataset, source };
}

/** The floor script over `root`, in a process of its own: its own time, CPU and peak RSS. */
function runFloor(root: string): Promise<{ files: number; lines: number; bytes: number; ms: number; cpuMs: number; hwmKb: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [FLOOR_SCRIPT, root], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += String(d)));
    child.once('error', reject);
    child.once('exit', (code) => {
      if (code !== 0) return reject(new Error(`workspace floor exited ${code}`));
      try {
        resolve(JSON.parse(out));
      } catch (error) {
        reject(error);
      }
    });
  });
}
