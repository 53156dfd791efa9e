import { sql } from 'drizzle-orm';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/logger.js';
import { isSealed, open } from '../src/secrets.js';
import { startService } from '../src/service.js';
import { CONFIG, IMAGES, inlineProvider } from './helpers/fixtures.js';
import { api, startTestService } from './helpers/service.js';

const KEY_HEX = 'ab'.repeat(32);
const SECRET = 'sk-live-do-not-leak-4242';

describe('provider secrets', () => {
  it('are sealed at rest, never returned or logged, and refused without a key', async () => {
    const logged: string[] = [];
    const sink = new Writable({ write: (chunk, _e, done) => (logged.push(String(chunk)), done()) });
    const svc = await startTestService({ env: { SECRETS_KEY: KEY_HEX }, logger: createLogger('trace', sink) });
    try {
      const body = {
        type: 'MULTI_PERSPECTIVE',
        perspectives: ['art_critic'],
        imagePaths: [IMAGES[0]],
        config: { ...CONFIG, providerConfig: inlineProvider(SECRET) },
      };
      const created = await api(svc.url, 'POST', '/api/perspectives/batch/create', body);
      expect(created.status).toBe(200);
      const jobId = created.body.jobId as string;
      expect(created.body.config.hasProviderConfig).toBe(true);
      const responses = [
        created,
        await api(svc.url, 'GET', `/api/perspectives/batch/status/${jobId}`),
        await api(svc.url, 'GET', '/api/perspectives/batch/list'),
        await api(svc.url, 'POST', '/api/perspectives/batch/create', { ...body, priority: 'x' }),
      ];
      for (const r of responses) expect(JSON.stringify(r.body)).not.toContain(SECRET);

      const { rows } = await svc.db.execute<{ config: { providerConfig: unknown } }>(
        sql`select config from job_queue.caption_jobs where job_id = ${jobId}`,
      );
      const stored = rows[0]!.config.providerConfig;
      expect(JSON.stringify(stored)).not.toContain(SECRET);
      expect(isSealed(stored)).toBe(true);
      // Stored in the bridge's shape: snake_case, name and models filled from the job's config.
      expect(open(stored as never, Buffer.from(KEY_HEX, 'hex'))).toEqual({
        name: CONFIG.provider,
        kind: 'openai',
        environment: 'local',
        base_url: 'http://127.0.0.1:9/v1',
        api_key: SECRET,
        models: [CONFIG.model],
      });
      expect(logged.join('')).not.toContain(SECRET);
    } finally {
      await svc.close();
    }
  });

  it('without SECRETS_KEY a providerConfig is a 400 naming the setting, and nothing is written', async () => {
    const svc = await startTestService();
    try {
      const refused = await api(svc.url, 'POST', '/api/perspectives/batch/create', {
        type: 'MULTI_PERSPECTIVE',
        perspectives: ['art_critic'],
        imagePaths: [IMAGES[0]],
        config: { ...CONFIG, providerConfig: inlineProvider(SECRET) },
      });
      expect(refused.status).toBe(400);
      expect(refused.body.errors).toEqual([{ path: 'config.providerConfig', message: expect.stringContaining('SECRETS_KEY') }]);
      expect(JSON.stringify(refused.body)).not.toContain(SECRET);
      const { rows } = await svc.db.execute<{ n: number }>(sql`select count(*)::int as n from job_queue.caption_jobs`);
      expect(rows[0]!.n).toBe(0);
    } finally {
      await svc.close();
    }
  });

  it('the service refuses to start without the key while unfinished jobs hold sealed secrets', async () => {
    const svc = await startTestService({ env: { SECRETS_KEY: KEY_HEX } });
    try {
      await api(svc.url, 'POST', '/api/perspectives/batch/create', {
        type: 'MULTI_PERSPECTIVE',
        perspectives: ['art_critic'],
        imagePaths: [IMAGES[0]],
        config: { ...CONFIG, providerConfig: inlineProvider(SECRET) },
      });
      const config = loadConfig({ PORT: '0', HOST: '127.0.0.1', DATABASE_URL: svc.database.url, WORKSPACE_PATH: svc.workspace });
      await expect(startService(config, createLogger('silent'))).rejects.toThrow(
        /SECRETS_KEY: not set, but 1 unfinished job\(s\) hold encrypted provider secrets/,
      );
    } finally {
      await svc.close();
    }
  });

  it('a malformed key stops start-up with a line that does not echo it', () => {
    expect(() => loadConfig({ SECRETS_KEY: 'too-short-key' })).toThrow(/^invalid configuration: SECRETS_KEY: must be 32 bytes[^"]*$/);
  });
});
