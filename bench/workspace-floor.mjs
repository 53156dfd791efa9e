// The floor of a workspace's first sync (bench/workspace.ts): a plain script that walks
// <root>/datasets, reads and sha256-hashes every image (four at a time, as the service's import does)
// and reads and JSON-parses every line of every analysis/batch_*/captions.jsonl. No database, no
// dimensions, no bookkeeping: what any import of those files has to do at the least.
// Prints {files, lines, bytes, ms, cpuMs, hwmKb} as JSON.
import { createHash } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';

const IMAGE = /\.(jpe?g|png|webp|gif|svg|bmp|tiff?)$/i;
const root = process.argv[2];
const started = performance.now();
const images = [];
const captionFiles = [];

async function walk(dir) {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) await walk(full);
    else if (entry.name === 'captions.jsonl') captionFiles.push(full);
    else if (IMAGE.test(entry.name)) images.push(full);
  }
}
await walk(path.join(root, 'datasets'));

let bytes = 0;
let next = 0;
const hashAll = async () => {
  while (next < images.length) {
    const data = await readFile(images[next++]);
    createHash('sha256').update(data).digest('hex');
    bytes += data.length;
  }
};
await Promise.all([hashAll(), hashAll(), hashAll(), hashAll()]);

let lines = 0;
for (const file of captionFiles) {
  for (const line of (await readFile(file, 'utf8')).split('\n')) {
    if (!line) continue;
    JSON.parse(line);
    lines += 1;
  }
}

const ms = performance.now() - started;
const cpu = process.cpuUsage();
const hwmKb = Number(/VmHWM:\s+(\d+)/.exec(await readFile('/proc/self/status', 'utf8'))?.[1] ?? NaN);
process.stdout.write(JSON.stringify({ files: images.length, lines, bytes, ms, cpuMs: (cpu.user + cpu.system) / 1000, hwmKb }));
