/**
 * graphcap studio is on zod 3: a consumer project with zod 3 as its own `zod` compiles against the
 * exported AppRouter types (`graphcap-data-service/client`), whose schemas are zod 4. A project is
 * laid out in a temporary folder (its node_modules: zod 3, and links to @trpc and to this package)
 * and type-checked by this repository's TypeScript; a wrong input must fail to compile, so the check
 * can fail.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const TSC = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
let dir: string;

const CONSUMER = `
import { z } from 'zod';
import { createTRPCClient, httpBatchLink, TRPCClientError } from '@trpc/client';
import type { AppRouter, Provider, RouterInputs, RouterOutputs } from 'graphcap-data-service/client';

// zod 3's own API, as studio writes its forms.
const form = z.object({ dataset: z.string().min(1), perspective: z.string().nonempty(), provider: z.string() });
type Form = z.infer<typeof form>;
// ZodEffects is zod 3's (zod 4 has no such type): this line compiles only if 'zod' here is zod 3.
const trimmed: z.ZodEffects<z.ZodString, string> = z.string().transform((s) => s.trim());

const trpc = createTRPCClient<AppRouter>({ links: [httpBatchLink({ url: 'http://127.0.0.1:32550/api/trpc' })] });

export async function createFromForm(values: unknown): Promise<[string, boolean[], string]> {
  const f: Form = form.parse(values);
  const input: RouterInputs['batch']['create'] = {
    type: 'DATASET_PERSPECTIVE',
    datasetName: f.dataset,
    perspectives: [f.perspective],
    config: { provider: f.provider, model: 'gemini-2.0-flash-exp' },
  };
  try {
    const job: RouterOutputs['batch']['create'] = await trpc.batch.create.mutate(input);
    const providers: Provider[] = (await trpc.providers.list.query({})).items;
    const caption = await trpc.captions.generate.mutate({ imagePath: '/workspace/datasets/os_img/x.jpg', perspective: f.perspective, provider: f.provider });
    return [job.jobId, providers.map((p) => p.hasApiKey), trimmed.parse(caption.captionId)];
  } catch (error) {
    if (error instanceof TRPCClientError) throw new Error(String(error.data?.httpStatus));
    throw error;
  }
}
`;

async function typecheck(source: string): Promise<{ code: number; output: string }> {
  await writeFile(path.join(dir, 'consumer.ts'), source);
  return promisify(execFile)(process.execPath, [TSC, '-p', dir], { cwd: dir }).then(
    ({ stdout }) => ({ code: 0, output: stdout }),
    (error: { code: number; stdout: string }) => ({ code: error.code, output: error.stdout }),
  );
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'graphcap-zod3-'));
  const modules = path.join(dir, 'node_modules');
  await mkdir(path.join(modules, '@trpc'), { recursive: true });
  await symlink(path.join(ROOT, 'node_modules', 'zod3'), path.join(modules, 'zod'));
  await symlink(path.join(ROOT, 'node_modules', '@trpc', 'client'), path.join(modules, '@trpc', 'client'));
  await symlink(path.join(ROOT, 'node_modules', '@trpc', 'server'), path.join(modules, '@trpc', 'server'));
  await symlink(ROOT, path.join(modules, 'graphcap-data-service'));
  await writeFile(path.join(dir, 'package.json'), JSON.stringify({ name: 'studio-like', private: true, type: 'module', dependencies: { zod: '^3.25.0' } }));
  await writeFile(
    path.join(dir, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true, skipLibCheck: true },
      files: ['consumer.ts'],
    }),
  );
}, 30_000);
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('a consumer on zod 3', () => {
  it('compiles against AppRouter with its own zod 3', async () => {
    const { code, output } = await typecheck(CONSUMER);
    expect(output).toBe('');
    expect(code).toBe(0);
  }, 120_000);

  it('and a wrong input is a compile error, so the check above can fail', async () => {
    const { code, output } = await typecheck(CONSUMER.replace("type: 'DATASET_PERSPECTIVE'", "type: 'EVERYTHING'"));
    expect(code).not.toBe(0);
    expect(output).toMatch(/consumer\.ts\(\d+,\d+\): error TS2322: Type '"EVERYTHING"' is not assignable/);
  }, 120_000);
});
