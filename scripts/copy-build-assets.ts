/**
 * `npm run build`'s second step: copies into the build what tsc does not emit (the migrations, the
 * queue board's static files), to `dist` or the folder given as the first argument.
 * test/production.test.ts runs it on its own build, so the build and its smoke test copy the same.
 */
import { cp } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BUILD_ASSETS = ['src/db/migrations', 'src/http/board'];

const outDir = path.resolve(process.argv[2] ?? path.join(ROOT, 'dist'));
for (const asset of BUILD_ASSETS) {
  await cp(path.join(ROOT, asset), path.join(outDir, asset), { recursive: true });
}
process.stdout.write(`copied ${BUILD_ASSETS.join(', ')} into ${outDir}\n`);
