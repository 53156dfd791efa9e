/**
 * The queue board (/board) in a real browser: Debian's Chromium driven by playwright-core (no
 * browser download), against the service over real HTTP and the stand-in Inference Bridge. A job's
 * bar moves to 100% live from the event stream without a reload; pause, resume, retry-failed,
 * move-to-front and cancel work from their buttons (checked on the API); failed items show with
 * their errors; the stream resumes with Last-Event-ID after a drop; with a read-only token the
 * buttons are absent, with the API token present; nothing is loaded from outside the machine.
 * Screenshots are kept as test artifacts in test-results/board-*.png. Skipped, saying why, when
 * /usr/bin/chromium is absent (CI installs it).
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { BrowserContext, Page, Request } from 'playwright-core';
import { chromiumAvailable, launchChromium, type Browser } from '../helpers/browser.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CONFIG, DATASET, IMAGES } from '../helpers/fixtures.js';
import { waitFor, waitForJobsToFinish } from '../helpers/jobs.js';
import { api, startTestService, type TestService } from '../helpers/service.js';
import { StandInBridge } from '../stand-ins/bridge.js';

const available = chromiumAvailable('board.test.ts');

const RESULTS = path.resolve('test-results');
const B = '/api/perspectives/batch';
const FAILING_IMAGE = 'girl-8435339_640.webp';
const FAILURE = 'unsupported image (stand-in bridge)';
const API_TOKEN = 'board-api-token-0123456789';
const API_READ_TOKEN = 'board-read-token-0123456789';

let context: BrowserContext;
let browser: Browser;
const requests: Request[] = [];

const screenshot = async (page: Page, name: string) => {
  await mkdir(RESULTS, { recursive: true });
  await page.screenshot({ path: path.join(RESULTS, name), fullPage: true });
};

const jobRow = (page: Page, jobId: string) => page.locator(`li.job[data-job-id="${jobId}"]`);

async function apiStatus(svc: TestService, jobId: string, headers: Record<string, string> = {}) {
  const response = await api(svc.url, 'GET', `${B}/status/${jobId}?limit=1`, undefined, headers);
  expect(response.status).toBe(200);
  return response.body.job as { status: string; queuePosition: number | null; progress: number };
}

describe.skipIf(!available)('the queue board in headless Chromium', () => {
  beforeAll(async () => {
    browser = await launchChromium({ width: 1200, height: 900 });
    context = browser.context;
    // Every request of every page of this browser context.
    context.on('request', (request) => requests.push(request));
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
  });

  describe('an open service running jobs on the stand-in bridge', () => {
    let bridge: StandInBridge;
    let svc: TestService;
    let page: Page;
    let navigations = 0;

    beforeAll(async () => {
      // Latency makes a 14-item job take a few seconds at two items in flight.
      bridge = await StandInBridge.start({ latencyMs: [400, 600] });
      svc = await startTestService({
        env: { INFERENCE_BRIDGE_URL: bridge.url, MAX_CONCURRENT_JOBS: '1', MAX_CONCURRENT_ITEMS: '2', POLL_INTERVAL_MS: '100' },
      });
      page = await context.newPage();
      page.on('framenavigated', (frame) => {
        if (frame === page.mainFrame()) navigations += 1;
      });
      await page.goto(`${svc.url}/board`);
      await page.locator('#connection[data-state="live"]').waitFor();
    }, 120_000);

    afterAll(async () => {
      await page?.close();
      await svc?.close();
      await bridge?.close();
    });

    const create = async (body: Record<string, unknown>) => {
      const response = await api(svc.url, 'POST', `${B}/create`, { config: CONFIG, ...body });
      expect(response.status, JSON.stringify(response.body)).toBe(200);
      return response.body.jobId as string;
    };

    it('shows a running job whose bar moves to 100% live, with its rate and ETA, without reloading the page', async () => {
      expect(page.url()).toBe(`${svc.url}/board/`);
      expect(await page.locator('#access').textContent()).toBe('open service');
      await page.evaluate("window.boardMarker = 'same document'");
      const navigationsBefore = navigations;
      const streamsBefore = requests.filter((r) => r.url().startsWith(`${svc.url}${B}/events`)).length;
      const requestsBefore = requests.length;

      const jobId = await create({ type: 'DATASET_PERSPECTIVE', datasetName: DATASET, perspectives: ['art_critic', 'storytelling'] });
      const row = jobRow(page, jobId);
      await row.waitFor();
      const bar = row.locator('[role="progressbar"]');
      const seen = new Set<number>();
      let sawRate = false;
      let sawEta = false;
      let shot = false;
      await waitFor(
        'the board to show the job at 100%',
        async () => {
          const value = Number(await bar.getAttribute('aria-valuenow'));
          seen.add(value);
          if (value > 0 && value < 100) {
            sawRate ||= /items\/(s|min)$/.test((await row.locator('.rate').textContent()) ?? '');
            sawEta ||= /^ETA \d/.test((await row.locator('.eta').textContent()) ?? '');
            if (!shot && sawEta) {
              await screenshot(page, 'board-running.png');
              shot = true;
            }
          }
          return value === 100;
        },
        60_000,
        50,
      );
      const between = [...seen].filter((v) => v > 0 && v < 100);
      expect(between.length, `values seen: ${[...seen].join(', ')}`).toBeGreaterThan(0);
      expect(sawRate, 'a throughput figure while running').toBe(true);
      expect(sawEta, 'an ETA while running').toBe(true);
      await waitFor('the job to move to the finished list as completed', async () =>
        (await page.locator(`#finished li.job[data-job-id="${jobId}"] .status`).textContent()) === 'completed',
      );
      expect((await apiStatus(svc, jobId)).status).toBe('completed');
      expect(await row.locator('.progress-text').textContent()).toBe('100%');
      expect(await page.locator('[data-stat="throughput"]').textContent()).toMatch(/^\d+(\.\d)? items\/min$/);

      // The same document all along, fed by the one event stream it opened before the job existed.
      expect(await page.evaluate('window.boardMarker')).toBe('same document');
      expect(navigations).toBe(navigationsBefore);
      expect(requests.filter((r) => r.url().startsWith(`${svc.url}${B}/events`)).length).toBe(streamsBefore);
      // Cheap: progress events move the bar and re-read only the job's row; the two lists are read
      // again only for the job's creation and status changes (created, running, completed, and the
      // row read that sees it finish): at most 4 times 2 reads, however many progress events came.
      const listReads = requests.slice(requestsBefore).filter((r) => r.url().startsWith(`${svc.url}${B}/list`)).length;
      expect(listReads).toBeGreaterThan(0);
      expect(listReads).toBeLessThanOrEqual(8);
      await screenshot(page, 'board-done.png');
    }, 90_000);

    it('pauses a job with its button (the API says paused) and resumes it', async () => {
      const jobId = await create({ type: 'DATASET_PERSPECTIVE', datasetName: DATASET, perspectives: ['graph_caption', 'style_preset'] });
      const row = jobRow(page, jobId);
      await row.locator('button[data-action="pause"]').click();
      await waitFor('the API to report the job paused', async () => (await apiStatus(svc, jobId)).status === 'paused');
      await waitFor('the board to show it paused', async () => (await row.locator('.status').textContent()) === 'paused');
      await row.locator('button[data-action="resume"]').click();
      const resumed = await waitFor('the API to report the job resumed', async () => {
        const { status } = await apiStatus(svc, jobId);
        return status !== 'paused' && status;
      });
      expect(['pending', 'running', 'completed']).toContain(resumed);
      await waitFor('the board to show the status the API has', async () => {
        const shown = await row.locator('.status').textContent();
        return shown !== 'paused' && shown === (await apiStatus(svc, jobId)).status;
      });
      await waitForJobsToFinish(svc.db, [jobId]);
      await waitFor('the board to show it completed', async () => (await row.locator('.status').textContent()) === 'completed');
    }, 90_000);

    it('shows a job’s failed items with their errors, and retry-failed queues them again', async () => {
      bridge.set({ permanentFailures: { [FAILING_IMAGE]: FAILURE }, latencyMs: [50, 100] });
      const jobId = await create({ type: 'MULTI_PERSPECTIVE', imagePaths: IMAGES.slice(0, 4), perspectives: ['art_critic', 'storytelling'] });
      const [finished] = await waitForJobsToFinish(svc.db, [jobId]);
      expect(finished!.status).toBe('partial');
      const row = jobRow(page, jobId);
      const failed = row.locator('.failed-items li');
      await waitFor('the two failed items on the board', async () => (await failed.count()) === 2);
      for (const text of await failed.allTextContents()) {
        expect(text).toContain(FAILING_IMAGE);
        expect(text).toContain(FAILURE);
      }
      expect(await row.locator('.failed-title').textContent()).toBe('2 failed items');
      expect(await row.locator('.status').textContent()).toBe('partial');
      await screenshot(page, 'board-failed.png');

      bridge.set({ permanentFailures: {} });
      await row.locator('button[data-action="retry-failed"]').click();
      await waitFor('the API to report the retried job completed', async () => (await apiStatus(svc, jobId)).status === 'completed');
      await waitFor('the board to show it completed, with no failed items', async () =>
        (await row.locator('.status').textContent()) === 'completed' && (await row.locator('.failed').isHidden()),
      );
    }, 90_000);

    it('opens the event stream again after a drop, resuming with Last-Event-ID', async () => {
      const connection = page.locator('#connection');
      // Every job has finished: once the board has read the newest job event, no other comes before the cut.
      const { rows } = await svc.pool.query<{ seq: string }>(
        "select max(seq)::text as seq from job_queue.outbox where starts_with(stream, 'job:')",
      );
      const lastEventId = rows[0]!.seq;
      expect(lastEventId).toMatch(/^\d+$/);
      await waitFor('the board to have read the newest event', async () => (await connection.getAttribute('data-last-event-id')) === lastEventId);
      const streams = () => requests.filter((r) => r.url().startsWith(`${svc.url}${B}/events`));
      const before = streams().length;

      svc.service.server.closeAllConnections();
      // Made while the board is disconnected (it waits the server's `retry:` of 2 s). This test's own
      // keep-alive socket was cut too: a second try goes out on a new one.
      const job = { type: 'MULTI_PERSPECTIVE', imagePaths: [IMAGES[0]], perspectives: ['art_critic'], priority: 1_000 };
      const jobId = await create(job).catch(() => create(job));
      const reopened = await waitFor('the board to open the stream again', async () => streams().length > before && streams()[before]);
      expect((await reopened.allHeaders())['last-event-id']).toBe(lastEventId);
      await page.locator('#connection[data-state="live"]').waitFor();
      await jobRow(page, jobId).waitFor();
      await waitForJobsToFinish(svc.db, [jobId]);
      await waitFor('the board to show the new job completed', async () =>
        (await jobRow(page, jobId).locator('.status').textContent()) === 'completed',
      );
      expect(Number(await connection.getAttribute('data-last-event-id'))).toBeGreaterThan(Number(lastEventId));
    }, 60_000);
  });

  describe('a service with API_TOKEN and API_READ_TOKEN', () => {
    let svc: TestService;
    let page: Page;
    const jobs: string[] = [];

    beforeAll(async () => {
      // No Inference Bridge: the jobs stay queued.
      svc = await startTestService({ env: { API_TOKEN, API_READ_TOKEN } });
      for (const image of IMAGES.slice(0, 2)) {
        const response = await api(
          svc.url,
          'POST',
          `${B}/create`,
          { type: 'MULTI_PERSPECTIVE', imagePaths: [image], perspectives: ['art_critic'], config: CONFIG },
          { authorization: `Bearer ${API_TOKEN}` },
        );
        expect(response.status).toBe(200);
        jobs.push(response.body.jobId);
      }
      page = await context.newPage();
    }, 120_000);

    afterAll(async () => {
      await page?.close();
      await svc?.close();
    });

    const enterToken = async (token: string) => {
      await page.locator('#token-input').fill(token);
      await page.locator('#token-form button[type="submit"]').click();
    };

    it('asks for a token, refuses a wrong one, and with the read token shows the queue without buttons', async () => {
      await page.goto(`${svc.url}/board/`);
      await page.locator('#token-panel').waitFor();
      expect(await page.locator('#token-message').textContent()).toMatch(/needs an API token/);
      expect(await page.locator('#board').isHidden()).toBe(true);

      await enterToken('not-the-token-0123456789');
      await waitFor('the wrong token refused', async () => /not accepted/.test((await page.locator('#token-message').textContent()) ?? ''));
      expect(await page.locator('#board').isHidden()).toBe(true);

      await enterToken(API_READ_TOKEN);
      for (const jobId of jobs) await jobRow(page, jobId).waitFor();
      await page.locator('#connection[data-state="live"]').waitFor();
      expect(await page.locator('#access').textContent()).toBe('read-only token');
      expect(await page.locator('button[data-action]').count()).toBe(0);
      expect(await page.evaluate("sessionStorage.getItem('graphcap.board.token')")).toBe(API_READ_TOKEN);
      // Every call carried the token.
      const apiCalls = requests.filter((r) => r.url().startsWith(`${svc.url}/api/`) && !r.url().endsWith('/api/access'));
      expect(apiCalls.length).toBeGreaterThan(0);
      for (const call of apiCalls.slice(-5)) expect((await call.allHeaders()).authorization).toBe(`Bearer ${API_READ_TOKEN}`);

      // The token survives a reload of the tab (sessionStorage), and still no buttons.
      await page.reload();
      for (const jobId of jobs) await jobRow(page, jobId).waitFor();
      expect(await page.locator('#token-panel').isHidden()).toBe(true);
      expect(await page.locator('button[data-action]').count()).toBe(0);
      await screenshot(page, 'board-read-only.png');
    }, 60_000);

    it('with the API token shows the buttons; move-to-front and cancel change the queue', async () => {
      await page.locator('#change-token').click();
      await enterToken(API_TOKEN);
      const [first, second] = jobs as [string, string];
      await jobRow(page, second).locator('button[data-action="to-front"]').waitFor();
      expect(await page.locator('#access').textContent()).toBe('full access');
      expect(await jobRow(page, first).locator('button[data-action="pause"]').count()).toBe(1);
      expect(await jobRow(page, first).locator('button[data-action="cancel"]').count()).toBe(1);
      await screenshot(page, 'board-full-access.png');

      await jobRow(page, second).locator('button[data-action="to-front"]').click();
      const auth = { authorization: `Bearer ${API_TOKEN}` };
      await waitFor('the API to put the job first', async () => (await apiStatus(svc, second, auth)).queuePosition === 1);
      await waitFor('the board to list it first', async () =>
        (await page.locator('#queue li.job').first().getAttribute('data-job-id')) === second,
      );

      // Cancel asks for a second click.
      const cancel = jobRow(page, first).locator('button[data-action="cancel"]');
      await cancel.click();
      expect(await cancel.textContent()).toBe('Confirm cancel');
      expect((await apiStatus(svc, first, auth)).status).toBe('pending');
      await cancel.click();
      await waitFor('the API to report the job cancelled', async () => (await apiStatus(svc, first, auth)).status === 'cancelled');
      await waitFor('the board to list it as cancelled among the finished', async () =>
        (await page.locator(`#finished li.job[data-job-id="${first}"] .status`).textContent()) === 'cancelled',
      );
    }, 60_000);
  });

  it('loaded nothing from outside the machine', () => {
    expect(requests.length).toBeGreaterThan(10);
    const hosts = new Set(requests.map((r) => r.url()).filter((u) => !u.startsWith('data:')).map((u) => new URL(u).hostname));
    expect([...hosts]).toEqual(['127.0.0.1']);
  });
});
