/**
 * Captions the queue makes, written back to graphcap's captions.jsonl beside their images, in its
 * line format: a new file for a perspective that had none, an image's line replaced in place in a
 * file that had one, never a reason for an item to fail, and nothing imported twice afterwards.
 */
import { appendFile, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { captionKey, formatCaptionLine, parseCaptionLine } from '../../src/workspace/caption-files.js';
import { CaptionFileIndexes, writeCaptionLines } from '../../src/workspace/caption-writer.js';
import { CONFIG, DATASET, IMAGES } from '../helpers/fixtures.js';
import { waitFor, waitForJobsToFinish } from '../helpers/jobs.js';
import { api, copyWorkspace, startTestService, type TestService } from '../helpers/service.js';
import { StandInBridge } from '../stand-ins/bridge.js';

let bridge: StandInBridge;
let svc: TestService;
const ws = (p: string) => path.join(svc.workspace, p);
const lines = async (p: string) => (await readFile(ws(p), 'utf8')).split('\n').filter(Boolean);
const pending = async () => (await svc.pool.query<{ n: number }>('select count(*)::int as n from core_schema.captions where export_pending')).rows[0]!.n;

beforeAll(async () => {
  bridge = await StandInBridge.start();
  svc = await startTestService({
    env: { INFERENCE_BRIDGE_URL: bridge.url, POLL_INTERVAL_MS: '100', CAPTION_EXPORT_INTERVAL_MS: '100', MAX_CONCURRENT_ITEMS: '8' },
  });
});
afterAll(async () => {
  await svc?.close();
  await bridge?.close();
});

async function runJob(perspectives: string[], extra: Record<string, unknown> = {}): Promise<string> {
  const created = await api(svc.url, 'POST', '/api/perspectives/batch/create', { type: 'DATASET_PERSPECTIVE', datasetName: DATASET, perspectives, config: CONFIG, ...extra });
  expect(created.status, JSON.stringify(created.body)).toBe(200);
  const [state] = await waitForJobsToFinish(svc.db, [created.body.jobId]);
  expect(state!.status).toBe('completed');
  return created.body.jobId as string;
}

describe('captions written back to the workspace', () => {
  it('writes a perspective’s file in graphcap’s line format, one line per image', async () => {
    await runJob(['custom_caption']);
    await waitFor('the write-back', async () => (await pending()) === 0);
    const file = 'datasets/os_img/analysis/batch_custom_caption/captions.jsonl';
    const written = await lines(file);
    expect(written).toHaveLength(IMAGES.length);
    const byName = new Map(written.map((l) => [(parseCaptionLine(l) as { filename: string }).filename, parseCaptionLine(l)]));
    for (const image of IMAGES) {
      const name = path.basename(image);
      expect(byName.get(`./${name}`)).toEqual({
        filename: `./${name}`,
        configName: 'custom_caption',
        version: '1',
        model: CONFIG.model,
        provider: CONFIG.provider,
        parsed: bridge.captionFor(name, 'custom_caption'),
      });
    }
    // Python's json.dumps, key for key.
    expect(written[0]).toMatch(/^\{"filename": "\.\/[^"]+", "config_name": "custom_caption", "version": "1", "model": "gemini-2\.0-flash-exp", "provider": "gemini", "parsed": \{/);
  });

  it('replaces an image’s line in place in a file that had one (graphcap shows an image’s first line)', async () => {
    const file = 'datasets/os_img/analysis/batch_storytelling/captions.jsonl';
    const before = await lines(file);
    bridge.set({ latencyMs: 0 });
    const jobId = await runJob(['storytelling'], { type: 'MULTI_PERSPECTIVE', datasetName: undefined, imagePaths: [IMAGES[0]] });
    await waitFor('the write-back', async () => (await pending()) === 0);
    const after = await lines(file);
    expect(after).toHaveLength(before.length);
    const name = path.basename(IMAGES[0]);
    const at = before.findIndex((l) => l.includes(`"./${name}"`));
    expect(after.filter((_, i) => i !== at)).toEqual(before.filter((_, i) => i !== at));
    expect(after[at]).not.toBe(before[at]);
    expect(parseCaptionLine(after[at]!)).toMatchObject({ filename: `./${name}`, model: CONFIG.model, provider: CONFIG.provider });
    // Read back by the import: the same captions, nothing new.
    const sync = await api(svc.url, 'POST', '/api/workspace/sync');
    const os = sync.body.datasets.find((d: { name: string }) => d.name === DATASET);
    expect(os.captions.imported).toBe(0);
    const { rows } = await svc.pool.query<{ n: number }>('select count(*)::int as n from core_schema.captions where job_id = $1', [jobId]);
    expect(rows[0]!.n).toBe(1);
  });

  it('keeps a job running when a file cannot be written, and writes it once it can', async () => {
    // A file where the analysis folder should be: no file under it can be made.
    await rm(ws('datasets/os_img/analysis'), { recursive: true });
    await writeFile(ws('datasets/os_img/analysis'), 'not a folder');
    try {
      await runJob(['time_tags']);
      const failed = async () => Number(/graphcap_caption_writebacks_total\{outcome="failed"\} (\d+)/.exec(await (await fetch(`${svc.url}/metrics`)).text())?.[1] ?? 0);
      await waitFor('a failed write', async () => (await failed()) > 0);
      expect(await pending()).toBe(IMAGES.length);
      expect(await (await fetch(`${svc.url}/metrics`)).text()).toMatch(/graphcap_caption_writebacks_pending 7/);
    } finally {
      await rm(ws('datasets/os_img/analysis'));
    }
    await waitFor('the retry', async () => (await pending()) === 0, 20_000);
    expect(await lines('datasets/os_img/analysis/batch_time_tags/captions.jsonl')).toHaveLength(IMAGES.length);
  });

  it('writes a dataset’s captions on demand', async () => {
    const dataset = (await api(svc.url, 'GET', `/api/datasets?name=${DATASET}`)).body.items[0];
    const queued = await api(svc.url, 'POST', `/api/datasets/${dataset.datasetId}/export-captions`, { perspectives: ['custom_caption', 'time_tags'] });
    expect(queued.body).toEqual({ queued: 2 * IMAGES.length });
    await waitFor('the write-back', async () => (await pending()) === 0);
    // time_tags' lines were in their file already (the retry above wrote them): not written twice. The
    // custom_caption file went with the analysis folder above: written anew.
    expect(await lines('datasets/os_img/analysis/batch_time_tags/captions.jsonl')).toHaveLength(IMAGES.length);
    expect(await lines('datasets/os_img/analysis/batch_custom_caption/captions.jsonl')).toHaveLength(IMAGES.length);
  });
});

describe('writing a captions file', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await copyWorkspace();
  });
  afterAll(async () => rm(dir, { recursive: true, force: true }));

  const entry = (filename: string, text: string) => ({ filename, configName: 'p', version: '1', model: 'm', provider: 'x', parsed: { caption: text } });
  const toWrite = (filename: string, text: string) => ({
    key: captionKey(`datasets/d/${filename}`, 'p', entry(filename, text)),
    filename,
    line: formatCaptionLine(entry(filename, text)),
  });

  it('drops a line a crash cut short, and does not write a line again that is there (a crash before its mark)', async () => {
    const file = path.join(dir, 'datasets/d/analysis/batch_p/captions.jsonl');
    const first = toWrite('a.jpg', 'one');
    await writeCaptionLines(file, 'datasets/d', 'p', [first]);
    // A crash mid-append: half a line at the end.
    await writeFile(file, `${first.line}\n{"filename": "./b.jpg", "config_na`);
    const outcome = await writeCaptionLines(file, 'datasets/d', 'p', [first, toWrite('b.jpg', 'two')]);
    expect(outcome).toMatchObject({ written: 1, alreadyThere: 1, replaced: 0, repaired: true });
    expect((await readFile(file, 'utf8')).split('\n')).toEqual([first.line, toWrite('b.jpg', 'two').line, '']);
    // A leftover of an interrupted replace goes.
    await writeFile(`${file}.123.abcdef01.tmp`, 'half');
    await writeCaptionLines(file, 'datasets/d', 'p', [toWrite('a.jpg', 'three')]);
    expect((await readFile(file, 'utf8')).split('\n')).toEqual([toWrite('a.jpg', 'three').line, toWrite('b.jpg', 'two').line, '']);
    await expect(readFile(`${file}.123.abcdef01.tmp`)).rejects.toThrow(/ENOENT/);
  });

  it('appends to a file it wrote last without reading it again, and reads it again once anyone else wrote to it', async () => {
    const file = path.join(dir, 'datasets/d/analysis/batch_p/indexed.jsonl');
    const indexes = new CaptionFileIndexes();
    const a = toWrite('a.jpg', 'one');
    await writeCaptionLines(file, 'datasets/d', 'p', [a], indexes);
    // A whole second as the file's time (one utimes can set again exactly), learnt by a write.
    const second = Math.floor(Date.now() / 1000) - 60;
    await utimes(file, second, second);
    expect(await writeCaptionLines(file, 'datasets/d', 'p', [a], indexes)).toMatchObject({ written: 0, alreadyThere: 1 });
    expect((await stat(file)).mtimeMs).toBe(second * 1000);
    // Then another image's line in the same bytes, with the file's size and time kept: only a write
    // that trusts what it knows of the file (a.jpg's line there) takes `a` as written already.
    const other = toWrite('z.jpg', 'one');
    expect(other.line.length).toBe(a.line.length);
    await writeFile(file, `${other.line}\n`);
    await utimes(file, second, second);
    expect(await writeCaptionLines(file, 'datasets/d', 'p', [a], indexes)).toMatchObject({ written: 0, alreadyThere: 1 });
    // Without what it knew, the file is read: `a` is not there, and is written.
    expect(await writeCaptionLines(file, 'datasets/d', 'p', [a])).toMatchObject({ written: 1, alreadyThere: 0 });

    // Someone else appends (a graphcap pipeline): the file's size changed, so it is read again and
    // that line is not written twice; an image's new caption still replaces its line.
    const piped = toWrite('b.jpg', 'two');
    await writeCaptionLines(file, 'datasets/d', 'p', [toWrite('c.jpg', 'three')], indexes);
    await appendFile(file, `${piped.line}\n`);
    expect(await writeCaptionLines(file, 'datasets/d', 'p', [piped, toWrite('a.jpg', 'four')], indexes)).toMatchObject({
      written: 1,
      alreadyThere: 1,
      replaced: 1,
    });
    expect((await readFile(file, 'utf8')).split('\n')).toEqual([other.line, toWrite('a.jpg', 'four').line, toWrite('c.jpg', 'three').line, piped.line, '']);
  });
});

describe('a workspace not written to (WORKSPACE_WRITE_CAPTIONS=false, as for a read-only mount)', () => {
  let readOnly: TestService;
  beforeAll(async () => {
    readOnly = await startTestService({ env: { INFERENCE_BRIDGE_URL: bridge.url, POLL_INTERVAL_MS: '100', CAPTION_EXPORT_INTERVAL_MS: '100', WORKSPACE_WRITE_CAPTIONS: 'false' } });
  });
  afterAll(async () => readOnly?.close());

  it('runs jobs as usual, writes nothing, lets the waiting captions go, and refuses an export on demand', async () => {
    const created = await api(readOnly.url, 'POST', '/api/perspectives/batch/create', { type: 'DATASET_PERSPECTIVE', datasetName: DATASET, perspectives: ['i2video'], config: CONFIG });
    expect((await waitForJobsToFinish(readOnly.db, [created.body.jobId]))[0]!.status).toBe('completed');
    await waitFor('the waiting captions to be let go', async () => (await readOnly.pool.query('select 1 from core_schema.captions where export_pending')).rowCount === 0);
    await expect(readFile(path.join(readOnly.workspace, 'datasets/os_img/analysis/batch_i2video/captions.jsonl'))).rejects.toThrow(/ENOENT/);
    const dataset = (await api(readOnly.url, 'GET', `/api/datasets?name=${DATASET}`)).body.items[0];
    const refused = await api(readOnly.url, 'POST', `/api/datasets/${dataset.datasetId}/export-captions`, {});
    expect(refused.status).toBe(409);
    expect(refused.body.detail).toMatch(/WORKSPACE_WRITE_CAPTIONS=false/);
  });
});
