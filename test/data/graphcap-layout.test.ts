/**
 * A workspace laid out as graphcap lays them out (its Media Server's rules), with the captions
 * graphcap already has: every image in the right dataset, every caption line attached once, and
 * what cannot be imported reported with its file (and line).
 */
import { execFileSync } from 'node:child_process';
import { appendFile, copyFile, mkdir, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IMAGES } from '../helpers/fixtures.js';
import { api, startTestService, type TestService } from '../helpers/service.js';
import { getOk, qs } from '../helpers/data.js';

let svc: TestService;
const ws = (p: string) => path.join(svc.workspace, p);
const OWL = IMAGES[6]!;
const line = (o: Record<string, unknown>) => `${JSON.stringify(o)}\n`;

async function put(relative: string, from: string = IMAGES[0]) {
  await mkdir(path.dirname(ws(relative)), { recursive: true });
  await copyFile(ws(from), ws(relative));
}

beforeAll(async () => {
  svc = await startTestService();
  await put('datasets/os_img/nested/deeper/pier.jpg', IMAGES[4]);
  await put('datasets/loose.jpg', IMAGES[3]);
  await put('datasets/local/studio_set/a.png', IMAGES[1]);
  await put('datasets/local/studio_set/sub/b.webp', IMAGES[2]);
  // Never images of a dataset: results beside images, hidden folders.
  await put('datasets/os_img/analysis/batch_art_critic/stray.jpg');
  await put('datasets/.hidden/y.jpg');
  await put('datasets/os_img/.thumbs/z.jpg');
  await mkdir(ws('datasets/vectors'), { recursive: true });
  await writeFile(ws('datasets/vectors/logo.svg'), '<svg xmlns="http://www.w3.org/2000/svg" width="120" height="80"><rect width="120" height="80"/></svg>');
  // Skipped with a reason: a link out of the workspace, a FIFO.
  await symlink('/etc/hostname', ws('datasets/os_img/escape.jpg'));
  execFileSync('mkfifo', [ws('datasets/os_img/pipe.jpg')]);

  const caption = (filename: string, extra: Record<string, unknown> = {}) =>
    line({ filename: `./${filename}`, config_name: 'storytelling', version: '1', model: 'm-1', provider: 'p-1', parsed: { scene_setting: `about ${filename}` }, ...extra });
  await mkdir(ws('datasets/local/studio_set/analysis/batch_storytelling'), { recursive: true });
  await writeFile(
    ws('datasets/local/studio_set/analysis/batch_storytelling/captions.jsonl'),
    caption('a.png') + '{"filename": "./a.png", "parsed": \n' + caption('gone.png') + caption('b.webp'),
  );
  await mkdir(ws('datasets/local/studio_set/sub/analysis/batch_graph_caption'), { recursive: true });
  await writeFile(
    ws('datasets/local/studio_set/sub/analysis/batch_graph_caption/captions.jsonl'),
    line({ filename: './b.webp', config_name: 'graph_caption', version: '1', model: 'm-2', provider: 'p-2', parsed: { short_caption: 'b' } }),
  );
  // A batch folder named after a config, not a perspective: the lines' config_name says which.
  await mkdir(ws('datasets/os_img/analysis/batch_artcap'), { recursive: true });
  await writeFile(
    ws('datasets/os_img/analysis/batch_artcap/captions.jsonl'),
    line({ filename: `./${path.basename(OWL)}`, config_name: 'art_critic', version: '1', model: 'alias-model', provider: 'p-3', parsed: { formal_analysis: 'via artcap' } }) +
      line({ filename: './x.jpg', config_name: 'no_such_perspective', parsed: {} }),
  );
});
afterAll(async () => svc?.close());

const sync = async () => {
  const response = await api(svc.url, 'POST', '/api/workspace/sync');
  expect(response.status, JSON.stringify(response.body)).toBe(200);
  return response.body as { datasets: { name: string; changes: { added: string[] }; problems: unknown[]; captions: any }[] };
};
const byName = (report: Awaited<ReturnType<typeof sync>>, name: string) => report.datasets.find((d) => d.name === name)!;
const datasetPaths = async (name: string) => {
  const dataset = (await getOk(svc.url, `/api/datasets${qs({ name })}`)).items[0];
  return (await getOk(svc.url, `/api/datasets/${dataset.datasetId}/images${qs({ limit: 100 })}`)).items.map((i: { path: string }) => i.path);
};
const latest = async (imagePath: string, perspective: string) => {
  const image = (await getOk(svc.url, `/api/images${qs({ pathContains: imagePath })}`)).items.find((i: { path: string }) => i.path === imagePath);
  return (await getOk(svc.url, `/api/images/${image.imageId}/latest-captions${qs({ perspective })}`)).captions[0];
};

describe('a workspace as graphcap lays it out', () => {
  it('puts every image in its dataset: loose ones in default, every subfolder, datasets/local/<name>, SVGs too', async () => {
    const report = await sync();
    expect(report.datasets.map((d) => d.name).sort()).toEqual(['default', 'os_img', 'studio_set', 'vectors']);
    expect(await datasetPaths('default')).toEqual(['datasets/loose.jpg']);
    expect(await datasetPaths('os_img')).toEqual([...IMAGES, 'datasets/os_img/nested/deeper/pier.jpg'].sort());
    expect((await datasetPaths('studio_set')).sort()).toEqual(['datasets/local/studio_set/a.png', 'datasets/local/studio_set/sub/b.webp']);
    const svg = (await getOk(svc.url, `/api/images${qs({ pathContains: 'logo.svg' })}`)).items[0];
    expect(svg).toMatchObject({ path: 'datasets/vectors/logo.svg', format: 'svg', width: 120, height: 80 });
    // Skipped, with why; nothing under analysis/ or a hidden folder is an image.
    expect(byName(report, 'os_img').problems).toEqual([
      { path: 'datasets/os_img/escape.jpg', message: 'a link that leads out of the workspace: skipped' },
      { path: 'datasets/os_img/pipe.jpg', message: 'not a regular file: skipped' },
    ]);
    const all = (await getOk(svc.url, `/api/images${qs({ limit: 100 })}`)).items.map((i: { path: string }) => i.path);
    expect(all.filter((p: string) => /stray|hidden|thumbs|escape|pipe/.test(p))).toEqual([]);
  });

  it('imports the captions graphcap already has, reporting lines it cannot import with their file and line', async () => {
    // The first sync (above) read them: look at what it stored.
    expect(await latest('datasets/local/studio_set/a.png', 'storytelling')).toMatchObject({
      result: { scene_setting: 'about a.png' },
      model: 'm-1',
      provider: 'p-1',
      perspectiveVersion: '1',
      jobId: null,
    });
    expect(await latest('datasets/local/studio_set/sub/b.webp', 'graph_caption')).toMatchObject({ result: { short_caption: 'b' }, model: 'm-2' });
    expect(await latest(OWL, 'art_critic')).toMatchObject({ result: { formal_analysis: 'via artcap' }, model: 'alias-model' });
    // The storytelling file's b.webp line names an image not in its folder (it is in sub/).
    const again = await sync();
    expect(byName(again, 'studio_set').captions).toEqual({ files: 2, read: 0, imported: 0, problems: [] });
  });

  it('reports the problems of a file when it reads it, and imports a changed line as the newest caption, once', async () => {
    const file = 'datasets/local/studio_set/analysis/batch_storytelling/captions.jsonl';
    await appendFile(ws(file), line({ filename: './a.png', config_name: 'storytelling', version: '2', model: 'm-9', provider: 'p-1', parsed: { scene_setting: 'a.png, again' } }));
    const report = await sync();
    expect(byName(report, 'studio_set').captions).toEqual({
      files: 2,
      read: 1,
      imported: 1,
      problems: [
        { file, line: 2, message: 'not JSON' },
        { file, line: 3, message: 'no image datasets/local/studio_set/gone.png (gone, or not registered)' },
        { file, line: 4, message: 'no image datasets/local/studio_set/b.webp (gone, or not registered)' },
      ],
    });
    expect(await latest('datasets/local/studio_set/a.png', 'storytelling')).toMatchObject({ result: { scene_setting: 'a.png, again' }, model: 'm-9', perspectiveVersion: '2' });
    const { rows } = await svc.pool.query<{ n: number }>(
      `select count(*)::int as n from core_schema.captions c join core_schema.images i on i.id = c.image_id where i.path = 'datasets/local/studio_set/a.png'`,
    );
    expect(rows[0]!.n).toBe(2);
    const os = byName(await sync(), 'os_img');
    expect(os.captions.problems).toEqual([]);
  });

  it('names the file and line of a line whose perspective is unknown, when it reads the file', async () => {
    const file = 'datasets/os_img/analysis/batch_artcap/captions.jsonl';
    await appendFile(ws(file), '\n');
    const report = await sync();
    expect(byName(report, 'os_img').captions).toMatchObject({ read: 1, imported: 0, problems: [{ file, line: 2, message: 'no perspective artcap or no_such_perspective' }] });
  });
});
