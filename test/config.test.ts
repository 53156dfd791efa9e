import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../src/config.js';

describe('configuration', () => {
  it('has the design’s defaults', () => {
    const config = loadConfig({});
    expect(config).toMatchObject({
      PORT: 32550,
      NODE_ENV: 'development',
      WORKSPACE_PATH: '/workspace',
      MAX_CONCURRENT_JOBS: 2,
      MAX_CONCURRENT_ITEMS: 4,
      LOG_LEVEL: 'info',
    });
    expect(config.DATABASE_URL).toBeUndefined();
    expect(config.MESSAGE_BROKER_URL).toBeUndefined();
    expect(config.INFERENCE_BRIDGE_URL).toBeUndefined();
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
