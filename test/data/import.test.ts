/**
 * Workspace import: the fixture's 7 images with their true metadata, the perspective library with a
 * disabled module, and re-imports that notice exactly what changed on disk.
 */
import { createHash, randomUUID } from 'node:crypto';
import { chmod, copyFile, link, mkdir, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { deflateSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addImagesToDataset, removeDatasetMembersByPath } from '../../src/db/datasets.js';
import { findImagesByPath } from '../../src/db/images.js';
import { CONFIG, createJob, finishItem, IMAGES, itemIds } from '../helpers/fixtures.js';
import { getOk, headerDimensions, qs } from '../helpers/data.js';
import { api, startTestService, type TestService } from '../helpers/service.js';

let svc: TestService;
beforeAll(async () => {
  svc = await startTestService();
  // The fixture's files are read-only; this copy is ours to change.
  for (const dir of ['datasets/os_img', 'perspective_library/core', 'perspective_library/niche', 'config']) {
    await chmod(path.join(svc.workspace, dir), 0o755);
    for (const f of await readdir(path.join(svc.workspace, dir))) await chmod(path.join(svc.workspace, dir, f), 0o755);
  }
});
afterAll(async () => svc?.close());

const ws = (relative: string) => path.join(svc.workspace, relative);

/** Dimensions of the fixture images as `file(1)` reports them, checked by hand. */
const KNOWN_DIMENSIONS: Record<string, [number, number]> = {
  'big-buddha-5587706_1280.jpg': [1024, 1280],
  'childs-hand-8845806_640.webp': [640, 426],
  'girl-8435339_640.webp': [640, 640],
  'highland-cow-8972000_640.jpg': [640, 512],
  'new-york-7781184_640.jpg': [428, 640],
  'universe-8153526_640.jpg': [640, 427],
  'ural-owl-6676441_640.jpg': [640, 427],
};

/** What the service should have recorded for a file, computed here from the file itself. */
async function truth(relative: string) {
  const bytes = await readFile(ws(relative));
  return {
    path: relative,
    format: path.extname(relative).slice(1).replace('jpeg', 'jpg'),
    sizeBytes: (await stat(ws(relative))).size,
    ...(await headerDimensions(ws(relative))),
    contentHash: createHash('sha256').update(bytes).digest('hex'),
  };
}

async function sync() {
  const response = await api(svc.url, 'POST', '/api/workspace/sync');
  expect(response.status, JSON.stringify(response.body)).toBe(200);
  return response.body;
}

async function osImg() {
  const page = await getOk(svc.url, `/api/datasets${qs({ name: 'os_img' })}`);
  expect(page.total).toBe(1);
  return page.items[0];
}

async function perspectiveByName(name: string) {
  const page = await getOk(svc.url, `/api/perspectives${qs({ nameContains: name, limit: 100 })}`);
  const found = page.items.find((p: { name: string }) => p.name === name);
  if (!found) throw new Error(`no perspective ${name}`);
  return found;
}

/** A valid PNG of w×h pixels, made here (grey, 8-bit). */
function png(w: number, h: number): Buffer {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf: Buffer) => {
    let c = 0xffffffff;
    for (const byte of buf) c = crcTable[(c ^ byte) & 0xff]! ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type: string, data: Buffer) => {
    const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const out = Buffer.alloc(body.length + 8);
    out.writeUInt32BE(data.length, 0);
    body.copy(out, 4);
    out.writeUInt32BE(crc(body), body.length + 4);
    return out;
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr.set([8, 0, 0, 0, 0], 8);
  const rows = Buffer.concat(Array.from({ length: h }, () => Buffer.from([0, ...Array<number>(w).fill(128)])));
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(rows)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

describe('importing the fixture workspace', () => {
  it('registers the 7 images with their true format, byte size, dimensions and sha256', async () => {
    const dataset = await osImg();
    expect(dataset.imageCount).toBe(7);
    const listed = await getOk(svc.url, `/api/datasets/${dataset.datasetId}/images${qs({ limit: 100 })}`);
    expect(listed.total).toBe(7);
    expect(listed.items.map((i: { path: string }) => i.path)).toEqual([...IMAGES]);
    for (const image of listed.items) {
      const expected = await truth(image.path);
      expect(image, image.path).toMatchObject(expected);
      expect([expected.width, expected.height], image.path).toEqual(KNOWN_DIMENSIONS[path.basename(image.path)]);
      expect(image.datasetIds).toEqual([dataset.datasetId]);
    }
    // The typed client sees the same.
    const typed = await svc.trpc.images.list.query({ datasetId: dataset.datasetId, limit: 100 });
    expect(typed).toEqual(listed);
  });

  it('loads every library file with graphcap’s fields, at revision 1', async () => {
    const files = (await readdir(ws('perspective_library'), { recursive: true })).filter((f) => String(f).endsWith('.json'));
    const all = await getOk(svc.url, `/api/perspectives${qs({ limit: 100 })}`);
    expect(all.total).toBe(files.length);
    const file = JSON.parse(await readFile(ws('perspective_library/core/art_critic.json'), 'utf8'));
    const artCritic = await perspectiveByName('art_critic');
    expect(artCritic).toMatchObject({
      name: 'art_critic',
      displayName: file.display_name,
      version: String(file.version),
      revision: 1,
      module: file.module,
      prompt: file.prompt,
      schemaFields: file.schema_fields,
      tags: file.tags,
      priority: file.priority,
      deprecated: file.deprecated,
      replacement: null,
      description: file.description,
      enabled: true,
      source: 'library',
      sourcePath: 'perspective_library/core/art_critic.json',
      definition: file,
    });
    const versions = await getOk(svc.url, `/api/perspectives/${artCritic.perspectiveId}/versions`);
    expect(versions.items).toEqual([expect.objectContaining({ revision: 1, version: '1', definition: file })]);
  });

  it('disables the perspectives of a module that perspective_settings.json disables, without a new revision', async () => {
    const settingsFile = ws('config/perspective_settings.json');
    const settings = JSON.parse(await readFile(settingsFile, 'utf8'));
    settings.modules.niche = { enabled: false, display_name: 'Niche' };
    await writeFile(settingsFile, JSON.stringify(settings, null, 2));
    const report = await sync();
    expect(report.perspectives).toMatchObject({
      added: 0,
      updated: 3,
      removed: 0,
      changes: { added: [], updated: ['custom_caption', 'emotional_sentiment', 'time_tags'], removed: [] },
      problems: [],
    });
    const disabled = await getOk(svc.url, `/api/perspectives${qs({ enabled: 'false', limit: 100 })}`);
    expect(disabled.items.map((p: { name: string }) => p.name)).toEqual(['custom_caption', 'emotional_sentiment', 'time_tags']);
    expect(disabled.items.every((p: { revision: number; module: string }) => p.revision === 1 && p.module === 'niche')).toBe(true);
    // A disabled perspective cannot be queued.
    const refused = await api(svc.url, 'POST', '/api/perspectives/batch/create', {
      type: 'MULTI_PERSPECTIVE',
      perspectives: ['time_tags'],
      imagePaths: [IMAGES[0]],
      config: CONFIG,
    });
    expect(refused.status).toBe(400);
  });

  it('is idempotent: a second import with nothing changed changes nothing', async () => {
    const before = await getOk(svc.url, `/api/images${qs({ limit: 100 })}`);
    const report = await sync();
    expect(report.perspectives).toMatchObject({ added: 0, updated: 0, removed: 0, changes: { added: [], updated: [], removed: [] } });
    expect(report.datasets).toEqual([
      expect.objectContaining({ name: 'os_img', added: 0, updated: 0, removed: 0, unchanged: 7, changes: { added: [], updated: [], removed: [] } }),
    ]);
    expect(await getOk(svc.url, `/api/images${qs({ limit: 100 })}`)).toEqual(before);
  });
});

describe('re-importing after changes on disk', () => {
  it('reports exactly the changed, removed and added files and the changed perspective, and records them', async () => {
    const [cow, owl, buddha] = [IMAGES[3], IMAGES[6]!, IMAGES[0]];
    // A caption made with art_critic's first revision, by a job.
    const job = await createJob(svc.url, { perspectives: ['art_critic'], imagePaths: [owl] });
    const [firstItem] = await itemIds(svc.db, job.jobId);
    await finishItem(svc.url, firstItem!, 'completed');
    const imagesBefore = new Map((await getOk(svc.url, `/api/images${qs({ limit: 100 })}`)).items.map((i: { path: string }) => [i.path, i]));

    await copyFile(ws(IMAGES[4]), ws(cow)); // changed: new-york's bytes under the cow's name
    await rm(ws(owl)); // removed
    await writeFile(ws('datasets/os_img/added-dot.png'), png(3, 2)); // added
    await utimes(ws(buddha), new Date('2030-01-02T03:04:05Z'), new Date('2030-01-02T03:04:05Z')); // touched, same bytes
    const artFile = ws('perspective_library/core/art_critic.json');
    const art = JSON.parse(await readFile(artFile, 'utf8'));
    await writeFile(artFile, JSON.stringify({ ...art, prompt: `${art.prompt}\nBe brief.` }, null, 2)); // same "version": "1"
    const storyFile = ws('perspective_library/creative/storytelling.json');
    await chmod(storyFile, 0o644);
    const story = JSON.parse(await readFile(storyFile, 'utf8'));
    await writeFile(storyFile, JSON.stringify(Object.fromEntries(Object.entries(story).reverse()))); // layout only

    const report = await sync();
    expect(report.perspectives).toMatchObject({
      added: 0,
      updated: 1,
      removed: 0,
      unchanged: report.perspectives.unchanged,
      changes: { added: [], updated: ['art_critic'], removed: [] },
      problems: [],
    });
    expect(report.datasets).toEqual([
      {
        name: 'os_img',
        datasetId: (await osImg()).datasetId,
        added: 1,
        updated: 1,
        removed: 1,
        unchanged: 5,
        changes: { added: ['datasets/os_img/added-dot.png'], updated: [cow], removed: [owl] },
        problems: [],
        // Its 7 captions.jsonl were imported at start-up and have not changed since.
        captions: { files: 7, read: 0, imported: 0, problems: [] },
      },
    ]);

    // The data: the cow has new-york's metadata, the PNG is registered, the owl left the dataset.
    const dataset = await osImg();
    expect(dataset.imageCount).toBe(7);
    const images = new Map((await getOk(svc.url, `/api/images${qs({ limit: 100 })}`)).items.map((i: any) => [i.path, i]));
    expect(images.get(cow)).toMatchObject({ ...(await truth(cow)), width: 428, height: 640, imageId: (imagesBefore.get(cow) as any).imageId });
    expect(images.get('datasets/os_img/added-dot.png')).toMatchObject({ ...(await truth('datasets/os_img/added-dot.png')), format: 'png', width: 3, height: 2 });
    expect(images.get(owl)).toMatchObject({ datasetIds: [] });
    const buddhaRow = images.get(buddha) as any;
    expect(buddhaRow.updatedAt).toBe((imagesBefore.get(buddha) as any).updatedAt);
    expect(buddhaRow.fileModifiedAt).toBe('2030-01-02T03:04:05.000Z');
    // The owl's caption stays, with the revision it was made with.
    const owlCaptions = await getOk(svc.url, `/api/images/${(images.get(owl) as any).imageId}/latest-captions`);
    expect(owlCaptions.captions.find((c: { perspective: string }) => c.perspective === 'art_critic')).toMatchObject({
      perspectiveVersion: '1',
      perspectiveRevision: 1,
      jobId: job.jobId,
    });

    // art_critic: a new revision with the same version; both definitions kept.
    const artCritic = await perspectiveByName('art_critic');
    expect(artCritic).toMatchObject({ revision: 2, version: '1', prompt: `${art.prompt}\nBe brief.` });
    const versions = await getOk(svc.url, `/api/perspectives/${artCritic.perspectiveId}/versions${qs({ order: 'asc' })}`);
    expect(versions.items.map((v: any) => [v.revision, v.version, v.definition.prompt])).toEqual([
      [1, '1', art.prompt],
      [2, '1', `${art.prompt}\nBe brief.`],
    ]);
    expect(await getOk(svc.url, `/api/perspectives/${artCritic.perspectiveId}/versions/1`)).toMatchObject({ revision: 1, definition: art });
    expect((await perspectiveByName('storytelling')).revision).toBe(1);

    // A caption made now names revision 2; the old one still names 1.
    const second = await createJob(svc.url, { perspectives: ['art_critic'], imagePaths: [cow] });
    await finishItem(svc.url, (await itemIds(svc.db, second.jobId))[0]!, 'completed');
    const captions = await getOk(svc.url, `/api/perspectives/${artCritic.perspectiveId}/captions${qs({ sort: 'createdAt' })}`);
    // (The example workspace's imported art_critic captions come first, with no revision: made elsewhere.)
    expect(captions.items.filter((c: any) => c.jobId !== null).map((c: any) => [c.imagePath, c.perspectiveRevision])).toEqual([
      [owl, 1],
      [cow, 2],
    ]);
    const byRevision = await getOk(svc.url, `/api/captions${qs({ perspective: 'art_critic', perspectiveRevision: 1 })}`);
    expect(byRevision.items.map((c: any) => c.imagePath)).toEqual([owl]);

    // And again: nothing to do.
    const again = await sync();
    expect(again.perspectives).toMatchObject({ added: 0, updated: 0, removed: 0 });
    expect(again.datasets[0]).toMatchObject({ added: 0, updated: 0, removed: 0, unchanged: 7 });
  });

  it('detaches and disables a perspective whose file is gone, keeps it while its file is unreadable, and takes it back', async () => {
    const file = ws('perspective_library/core/locality_graph.json');
    const text = await readFile(file, 'utf8');
    const before = await perspectiveByName('locality_graph');

    await writeFile(ws('perspective_library/core/graph_caption.json'), '{ not json');
    await rm(file);
    const report = await sync();
    expect(report.perspectives).toMatchObject({ removed: 1, changes: { removed: ['locality_graph'] } });
    expect(report.perspectives.problems).toEqual([expect.objectContaining({ file: 'perspective_library/core/graph_caption.json' })]);
    expect(await perspectiveByName('locality_graph')).toMatchObject({ enabled: false, source: 'api', sourcePath: null, revision: 1 });
    expect(await perspectiveByName('graph_caption')).toMatchObject({ enabled: true, source: 'library' });

    await writeFile(file, text);
    const back = await sync();
    expect(back.perspectives).toMatchObject({ added: 0, updated: 1, removed: 0, changes: { updated: ['locality_graph'] } });
    expect(await perspectiveByName('locality_graph')).toMatchObject({
      perspectiveId: before.perspectiveId,
      enabled: true,
      source: 'library',
      revision: 1,
    });
  });

  it('empties a dataset whose folder is gone, but keeps the images added to it from elsewhere', async () => {
    await mkdir(ws('datasets/extra'));
    await copyFile(ws(IMAGES[1]), ws('datasets/extra/hand.webp'));
    const first = await sync();
    const extra = first.datasets.find((d: { name: string }) => d.name === 'extra');
    expect(extra).toMatchObject({ added: 1, changes: { added: ['datasets/extra/hand.webp'] } });
    const other = (await getOk(svc.url, `/api/images${qs({ pathContains: 'universe' })}`)).items[0];
    const added = await api(svc.url, 'POST', `/api/datasets/${extra.datasetId}/images`, { imageIds: [other.imageId] });
    expect(added.status).toBe(200);

    await rm(ws('datasets/extra'), { recursive: true });
    const second = await sync();
    expect(second.datasets.find((d: { name: string }) => d.name === 'extra')).toEqual({
      name: 'extra',
      datasetId: extra.datasetId,
      added: 0,
      updated: 0,
      removed: 1,
      unchanged: 0,
      changes: { added: [], updated: [], removed: ['datasets/extra/hand.webp'] },
      problems: [],
      captions: { files: 0, read: 0, imported: 0, problems: [] },
    });
    const members = await getOk(svc.url, `/api/datasets/${extra.datasetId}/images`);
    expect(members.items.map((i: { path: string }) => i.path)).toEqual([other.path]);
  });

  it('imports a folder bigger than one scan batch (1,000 files) with the same report as a small one', async () => {
    await mkdir(ws('datasets/many'));
    const names = Array.from({ length: 2_500 }, (_, i) => `Pic-${i % 7 === 0 ? 'b' : 'A'}${String(i).padStart(4, '0')}.jpg`);
    for (const name of names) await link(ws(IMAGES[5]!), ws(`datasets/many/${name}`));
    await writeFile(ws('datasets/many/notes.txt'), 'not an image');
    await mkdir(ws('datasets/many/analysis.jpg')); // a folder with an image's name is no image
    const inLocaleOrder = (paths: string[]) => [...paths].sort((a, b) => a.localeCompare(b));
    const paths = inLocaleOrder(names.map((n) => `datasets/many/${n}`));
    const many = (report: { datasets: { name: string; datasetId: string; changes: { added: string[] } }[] }) =>
      report.datasets.find((d) => d.name === 'many')!;

    const first = many(await sync());
    expect(first).toMatchObject({ added: 2_500, updated: 0, removed: 0, unchanged: 0 });
    expect(first.changes.added).toEqual(paths);
    const truthOfOne = await truth(paths[1_234]!);
    const listed = await getOk(svc.url, `/api/images${qs({ pathContains: path.basename(paths[1_234]!) })}`);
    expect(listed.items[0]).toMatchObject(truthOfOne);

    // Changes spread over the batches: new bytes, the same bytes touched, files gone, a file added.
    const changed = [paths[3]!, paths[1_500]!, paths[2_499]!];
    for (const p of changed) {
      await rm(ws(p));
      await copyFile(ws(IMAGES[0]), ws(p));
    }
    await utimes(ws(paths[10]!), new Date('2030-01-02T03:04:05Z'), new Date('2030-01-02T03:04:05Z'));
    const gone = [paths[0]!, paths[999]!, paths[1_000]!, paths[2_001]!];
    for (const p of gone) await rm(ws(p));
    await copyFile(ws(IMAGES[3]), ws('datasets/many/zz-new.jpg'));
    const second = many(await sync());
    expect(second).toEqual({
      name: 'many',
      datasetId: first.datasetId,
      added: 1,
      updated: 3,
      removed: 4,
      unchanged: 2_500 - 3 - 4,
      changes: { added: ['datasets/many/zz-new.jpg'], updated: inLocaleOrder(changed), removed: [...gone].sort() },
      problems: [],
      captions: { files: 0, read: 0, imported: 0, problems: [] },
    });
    expect(listed.items.length).toBe(1);
    expect((await getOk(svc.url, `/api/images${qs({ pathContains: path.basename(paths[1_500]!) })}`)).items[0]).toMatchObject(
      await truth(paths[1_500]!),
    );
    const dataset = (await getOk(svc.url, `/api/datasets${qs({ name: 'many' })}`)).items[0];
    expect(dataset.imageCount).toBe(2_500 - 4 + 1);
    // And nothing to do the third time.
    expect(many(await sync())).toMatchObject({ added: 0, updated: 0, removed: 0, unchanged: 2_497 });
  });

  it('looks up, adds and removes more images at once than PostgreSQL takes parameters (65,535)', async () => {
    const many = 70_000;
    const paths = Array.from({ length: many }, (_, i) => `datasets/os_img/missing-${i}.jpg`);
    const found = await findImagesByPath(svc.db, [...paths, IMAGES[0]]);
    expect(found.map((r) => r.path)).toEqual([IMAGES[0]]);
    const dataset = await osImg();
    const members = await getOk(svc.url, `/api/datasets/${dataset.datasetId}/images${qs({ limit: 100 })}`);
    const ids: string[] = members.items.map((i: { imageId: string }) => i.imageId);
    const first: string = members.items[0].path;
    expect(await addImagesToDataset(svc.db, dataset.datasetId, Array.from({ length: many }, (_, i) => ids[i % ids.length]!))).toBe(0);
    expect(await removeDatasetMembersByPath(svc.db, dataset.datasetId, [...paths, first])).toEqual([first]);
    expect((await osImg()).imageCount).toBe(ids.length - 1);
    expect(await addImagesToDataset(svc.db, dataset.datasetId, [ids[0]!])).toBe(1);
    expect((await osImg()).imageCount).toBe(ids.length);
  });
});
