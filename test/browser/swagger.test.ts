/**
 * Swagger UI in a real browser: Debian's Chromium, driven by playwright-core (no browser download),
 * opens /docs, finds every batch endpoint, runs "Try it out" on the job list and reads its 200, and
 * proves the page loaded nothing from outside the machine. The screenshot is kept as a test artifact
 * in test-results/swagger-ui.png. CI (`.ci/run`) installs chromium when it is missing; elsewhere the
 * test is skipped, saying why, when /usr/bin/chromium is absent.
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { BrowserContext } from 'playwright-core';
import { chromiumAvailable, launchChromium, type Browser } from '../helpers/browser.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createJob } from '../helpers/fixtures.js';
import { startTestService, type TestService } from '../helpers/service.js';

const available = chromiumAvailable('swagger.test.ts');

const SCREENSHOT = path.resolve('test-results/swagger-ui.png');
const BATCH_OPERATIONS = [
  'post /api/perspectives/batch/create',
  'get /api/perspectives/batch/list',
  'get /api/perspectives/batch/status/{jobId}',
  'post /api/perspectives/batch/cancel/{jobId}',
  'post /api/perspectives/batch/reorder',
  'post /api/perspectives/batch/analyze-images',
  'post /api/perspectives/batch/archive/{jobId}',
  'post /api/perspectives/batch/restore/{jobId}',
  'post /api/perspectives/batch/retry-failed/{jobId}',
  'get /api/perspectives/batch/statistics',
  'post /api/perspectives/batch/items/{itemId}',
  'get /api/perspectives/batch/items/{jobId}/list',
  'get /api/perspectives/batch/items/{jobId}/failed',
  'get /api/perspectives/batch/events',
];

let svc: TestService;
let context: BrowserContext;
let browser: Browser;
const requested: string[] = [];

describe.skipIf(!available)('Swagger UI in headless Chromium', () => {
  beforeAll(async () => {
    svc = await startTestService();
    browser = await launchChromium({ width: 1280, height: 900 });
    context = browser.context;
    // Every request of every page and worker of this browser context.
    context.on('request', (request) => requested.push(request.url()));
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await svc?.close();
  });

  it('lists every batch endpoint, runs "Try it out" on the job list, and loads nothing from outside', async () => {
    const job = await createJob(svc.url, { userId: 'swagger' });
    const page = await context.newPage();
    await page.goto(`${svc.url}/docs/`);

    // Every batch operation is listed (method + path).
    await page.locator('.opblock').first().waitFor();
    const listed = await page
      .locator('.opblock')
      .evaluateAll((blocks) =>
        blocks.map((b) => {
          const method = b.querySelector('.opblock-summary-method')?.textContent?.trim().toLowerCase();
          const route = b.querySelector('.opblock-summary-path')?.getAttribute('data-path');
          return `${method} ${route}`;
        }),
      );
    for (const operation of BATCH_OPERATIONS) expect(listed, operation).toContain(operation);

    // "Try it out" on GET /list, then Execute: the live response is a 200 with the job in it.
    const list = page.locator('#operations-batch-batch-list');
    await list.locator('.opblock-summary').click();
    await list.locator('button.try-out__btn').click();
    await list.locator('button.execute').click();
    const response = list.locator('.live-responses-table .response');
    await response.first().waitFor();
    expect((await response.locator('.response-col_status').first().textContent())?.trim()).toBe('200');
    const body = await response.locator('.response-col_description pre').first().textContent();
    const parsed = JSON.parse(body ?? '{}') as { items: { jobId: string }[]; total: number };
    expect(parsed.items.map((j) => j.jobId)).toContain(job.jobId);

    await mkdir(path.dirname(SCREENSHOT), { recursive: true });
    await response.first().scrollIntoViewIfNeeded();
    await page.screenshot({ path: SCREENSHOT, fullPage: false });

    // Nothing left the machine: the page, its assets and the API call all went to the service.
    expect(requested.length).toBeGreaterThan(3);
    const hosts = new Set(requested.filter((u) => !u.startsWith('data:')).map((u) => new URL(u).hostname));
    expect([...hosts]).toEqual(['127.0.0.1']);
    expect(requested.some((u) => u.startsWith(`${svc.url}/api/perspectives/batch/list`))).toBe(true);
  });
});
