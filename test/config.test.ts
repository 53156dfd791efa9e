import { describe, expect, it } from 'vitest';
import { ConfigError, EXAMPLE_WORKSPACE, loadConfig } from '../src/config.js';

describe('configuration', () => {
  it('has the design’s defaults', () => {
    const config = loadConfig({});
    expect(config).toMatchObject({
      PORT: 32550,
      NODE_ENV: 'development',
      MAX_CONCURRENT_JOBS: 2,
      MAX_CONCURRENT_ITEMS: 4,
      LOG_LEVEL: 'info',
    });
    expect(config.DATABASE_URL).toBeUndefined();
    expect(config.MESSAGE_BROKER_URL).toBeUndefined();
    expect(config.INFERENCE_BRIDGE_URL).toBeUndefined();
    // No /workspace on the test machine: the repository's example workspace, and the bridge sees it there too.
    expect(config).toMatchObject({ WORKSPACE_PATH: EXAMPLE_WORKSPACE, WORKSPACE_SOURCE: 'example', BRIDGE_WORKSPACE_PATH: EXAMPLE_WORKSPACE });
    expect(config.PROVIDERS_FILE).toBe(`${EXAMPLE_WORKSPACE}/config/provider.config.toml`);
    // graphcap studio's development server may call the API from the browser in development only.
    expect(config.CORS_ORIGINS).toEqual(['http://localhost:32200', 'http://127.0.0.1:32200']);
    expect(loadConfig({ NODE_ENV: 'production' }).CORS_ORIGINS).toEqual([]);
    // The default grace fits in Docker's default stop timeout (10 s), with room for the rest of the shutdown.
    expect(config.SHUTDOWN_GRACE_SECONDS).toBeLessThan(10);
    // An open API listens on loopback only; a guarded one everywhere; HOST decides when given.
    expect(config.HOST).toBe('127.0.0.1');
    expect(loadConfig({ API_TOKEN: 't'.repeat(32) }).HOST).toBe('0.0.0.0');
    expect(loadConfig({ HOST: '0.0.0.0' }).HOST).toBe('0.0.0.0');
    // Host names answered: local ones without a token (and HOST when it names one), any with one.
    expect(config.ALLOWED_HOSTS).toEqual(['localhost', '127.0.0.1', '::1']);
    expect(loadConfig({ HOST: 'studio-box' }).ALLOWED_HOSTS).toEqual(['localhost', '127.0.0.1', '::1', 'studio-box']);
    expect(loadConfig({ API_TOKEN: 't'.repeat(32) }).ALLOWED_HOSTS).toBeUndefined();
    expect(loadConfig({ ALLOWED_HOSTS: 'data-service, LOCALHOST' }).ALLOWED_HOSTS).toEqual(['data-service', 'localhost']);
    expect(loadConfig({ ALLOWED_HOSTS: '*' }).ALLOWED_HOSTS).toBeUndefined();
    // The workspace import's caps.
    expect(config).toMatchObject({ WORKSPACE_IMAGE_MAX_BYTES: 2 * 1024 ** 3, WORKSPACE_LIBRARY_FILE_MAX_BYTES: 1024 * 1024 });
  });

  it('takes the bridge address with or without its /api/v1 prefix, and the bridge’s own view of the workspace', () => {
    for (const given of ['http://inference-bridge:32100', 'http://inference-bridge:32100/', 'http://inference-bridge:32100/api/v1', 'http://inference-bridge:32100/api/v1/']) {
      expect(loadConfig({ INFERENCE_BRIDGE_URL: given }).INFERENCE_BRIDGE_URL, given).toBe('http://inference-bridge:32100');
    }
    expect(loadConfig({ INFERENCE_BRIDGE_URL: 'http://proxy/bridge/api/v1' }).INFERENCE_BRIDGE_URL).toBe('http://proxy/bridge');
    const config = loadConfig({ WORKSPACE_PATH: '/srv/graphcap', BRIDGE_WORKSPACE_PATH: '/workspace' });
    expect(config).toMatchObject({ WORKSPACE_PATH: '/srv/graphcap', WORKSPACE_SOURCE: 'env', BRIDGE_WORKSPACE_PATH: '/workspace' });
  });

  it('parses values and treats empty strings as unset', () => {
    const config = loadConfig({ PORT: '8080', MAX_CONCURRENT_ITEMS: '16', INFERENCE_BRIDGE_URL: 'http://bridge:8000/', MESSAGE_BROKER_URL: '' });
    expect(config.PORT).toBe(8080);
    expect(config.MAX_CONCURRENT_ITEMS).toBe(16);
    expect(config.INFERENCE_BRIDGE_URL).toBe('http://bridge:8000');
    expect(config.MESSAGE_BROKER_URL).toBeUndefined();
  });

  it('names each bad variable on a line of its own, without echoing credentials', () => {
    let error: unknown;
    try {
      loadConfig({ PORT: 'eighty', MAX_CONCURRENT_JOBS: '0', LOG_LEVEL: 'loud', DATABASE_URL: 'mysql://root:hunter2@db/x' });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const lines = (error as Error).message.split('\n');
    expect(lines).toHaveLength(4);
    expect(lines.find((l) => l.includes('PORT'))).toMatch(/^invalid configuration: PORT: .*\(got "eighty"\)$/);
    expect(lines.find((l) => l.includes('MAX_CONCURRENT_JOBS'))).toMatch(/MAX_CONCURRENT_JOBS: .*>=1/);
    expect(lines.find((l) => l.includes('LOG_LEVEL'))).toMatch(/LOG_LEVEL/);
    expect(lines.find((l) => l.includes('DATABASE_URL'))).toMatch(/postgres/);
    expect((error as Error).message).not.toContain('hunter2');
  });
});
