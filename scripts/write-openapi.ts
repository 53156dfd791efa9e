/**
 * Writes openapi/openapi.json from the routers (or to the path given as the first argument).
 * `npm run openapi`; CI fails when it is stale.
 */
import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { buildOpenApiDocument } from '../src/openapi.js';

export const OPENAPI_FILE = fileURLToPath(new URL('../openapi/openapi.json', import.meta.url));

export function renderOpenApiDocument(): string {
  return `${JSON.stringify(buildOpenApiDocument(), null, 2)}\n`;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const file = process.argv[2] ?? OPENAPI_FILE;
  await writeFile(file, renderOpenApiDocument());
  process.stdout.write(`wrote ${file}\n`);
}
