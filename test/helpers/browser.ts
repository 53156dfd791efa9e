/**
 * Debian's Chromium (/usr/bin/chromium) driven by playwright-core, for the browser tests: no
 * browser download, a fresh profile, and the flags that keep it off the network (this machine has
 * only loopback; without them Chromium keeps trying Google's hosts). CI (`.ci/run`) installs the
 * package; elsewhere the tests are skipped, saying why.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';

/** Whether Chromium is here; in CI its absence is an error, elsewhere a skip with a line saying so. */
export function chromiumAvailable(testFile: string): boolean {
  const available = existsSync(CHROMIUM);
  if (!available && process.env.CI) throw new Error(`${CHROMIUM} is missing in CI: .ci/run installs Debian's chromium package`);
  if (!available) process.stderr.write(`${testFile} skipped: ${CHROMIUM} is missing (apt-get install chromium)\n`);
  return available;
}

export interface Browser {
  context: BrowserContext;
  close(): Promise<void>;
}

/** A headless Chromium with a profile of its own, removed on close. */
export async function launchChromium(viewport: { width: number; height: number }): Promise<Browser> {
  const userDataDir = await mkdtemp(path.join(os.tmpdir(), 'graphcap-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport,
  });
  return {
    context,
    async close() {
      await context.close();
      await rm(userDataDir, { recursive: true, force: true });
    },
  };
}
