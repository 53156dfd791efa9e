/**
 * The repository stands on its own: no tracked file refers to a path outside it (the sibling
 * folder `shared` of the machine it was built on, say), so a clone with nothing beside it works. A
 * relative path is resolved from the file's folder and from the repository's root (scripts and the
 * README run from there); it fails the check when it leaves the repository from one of them without
 * landing on something in it from the other. In code, only the paths it loads count (imports,
 * `new URL(..., import.meta.url)`): tests hold hostile paths like ../../etc/passwd on purpose.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
/** Places of the machine this project is built on, never of a clone. */
const FOREIGN = /\/work\/(?:shared|\.library|\.mirror)\b|\.\.\/shared\b/;
/** A relative path: one or more ../ and a name. */
const RELATIVE = /(?<![\w.])((?:\.\.\/)+[\w@.-][\w@./-]*)/g;
/** In code: a relative path it loads (an import, a URL from import.meta.url). */
const LOADED = /(?:\bfrom\s+|\bimport\s*\(\s*|\brequire\s*\(\s*|new URL\(\s*)['"]((?:\.\.\/)+[^'"]+)['"](?!\s*,\s*(?!import\.meta\.url))/g;
const CODE = /\.(?:[cm]?[jt]s|py)$/;

const inside = (p: string) => p === ROOT.replace(/\/$/, '') || p.startsWith(ROOT);

/** What in `text` (a file at `file`) points outside the repository. */
export function outsideReferences(file: string, text: string): string[] {
  const found: string[] = [];
  for (const [i, line] of text.split('\n').entries()) {
    if (FOREIGN.test(line)) {
      found.push(`${file}:${i + 1}: ${line.trim().slice(0, 160)}`);
      continue;
    }
    for (const [, ref] of line.matchAll(CODE.test(file) ? LOADED : RELATIVE)) {
      const fromFile = path.resolve(ROOT, path.dirname(file), ref!);
      const fromRoot = path.resolve(ROOT, ref!);
      // Imports name the .js a .ts file compiles to.
      const ok = (p: string) => inside(p) && (existsSync(p) || existsSync(p.replace(/\.js$/, '.ts')));
      const leaves = !inside(fromFile) || !inside(fromRoot);
      if (leaves && !ok(fromFile) && !ok(fromRoot)) found.push(`${file}:${i + 1}: ${ref} (outside the repository)`);
    }
  }
  return found;
}

describe('the repository', () => {
  it('refers to no path outside itself', () => {
    const files = execFileSync('git', ['ls-files', '-z'], { cwd: ROOT, encoding: 'utf8' }).split('\0').filter(Boolean);
    expect(files.length).toBeGreaterThan(100);
    const found: string[] = [];
    for (const file of files) {
      const full = path.join(ROOT, file);
      // Deleted in the work tree (not yet committed), or this file, whose examples are such references.
      if (!existsSync(full) || file === 'test/standalone.test.ts') continue;
      const bytes = readFileSync(full);
      if (bytes.includes(0)) continue; // images and other binaries
      found.push(...outsideReferences(file, bytes.toString('utf8')));
    }
    expect(found).toEqual([]);
  });

  it('and the check finds what it should', () => {
    // Built, not written out: this file must pass the grep for the sibling folder's name too.
    const sibling = ['..', 'shared'].join('/');
    expect(outsideReferences('README.md', `cp -r ${sibling}/fixtures/graphcap-workspace workspace`)).toHaveLength(1);
    expect(outsideReferences('test/helpers/x.ts', `new URL('../../${sibling}/fixtures', import.meta.url)`)).toHaveLength(1);
    expect(outsideReferences('scripts/x.sh', 'cat /work/shared/design/API.md')).toHaveLength(1);
    expect(outsideReferences('scripts/x.sh', 'cp ../../outside-thing .')).toHaveLength(1);
    // Inside: a test's path to the example workspace, an import, the package file from src/.
    expect(outsideReferences('test/stand-ins/x.ts', "new URL('../../examples/workspace', import.meta.url)")).toEqual([]);
    expect(outsideReferences('test/jobs/x.ts', "import { x } from '../../src/config.js';")).toEqual([]);
    expect(outsideReferences('src/http/x.ts', "readFileSync(new URL('../../package.json', import.meta.url))")).toEqual([]);
    // A URL relative to a web page, and a hostile input in a test, are no references.
    expect(outsideReferences('src/http/board/board.js', "const API = new URL('../api/', document.baseURI);")).toEqual([]);
    expect(outsideReferences('test/security.test.ts', "for (const p of ['../../../etc/hostname']) await create(p);")).toEqual([]);
  });
});
