/** The service as a real process (`node --import tsx src/main.ts`), for start-up, shutdown and replica tests. */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { freePort } from '../../src/db/embedded.js';

export { freePort };
import { setTimeout as sleep } from 'node:timers/promises';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface ServiceProcess {
  child: ChildProcess;
  url: string;
  output: () => string;
  /** Resolves with the exit code (or signal name). */
  exited: Promise<number | string>;
}


/**
 * Starts the service with exactly `env` (plus PATH/HOME), and waits for /health unless told not to.
 * By default the TypeScript entry point of this checkout; `cwd` and `command` run another build.
 */
export async function startProcess(
  env: Record<string, string>,
  options: { waitForHealth?: boolean; cwd?: string; command?: string[] } = {},
): Promise<ServiceProcess> {
  const port = env.PORT ?? String(await freePort());
  const child = spawn(process.execPath, options.command ?? ['--import', 'tsx', 'src/main.ts'], {
    cwd: options.cwd ?? ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', HOST: '127.0.0.1', LOG_LEVEL: 'info', ...env, PORT: port },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (d) => (output += String(d)));
  child.stderr!.on('data', (d) => (output += String(d)));
  const exited = new Promise<number | string>((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  const handle: ServiceProcess = { child, url: `http://127.0.0.1:${port}`, output: () => output, exited };
  if (options.waitForHealth !== false) await waitForHealth(handle);
  return handle;
}

export async function waitForHealth(p: ServiceProcess, deadlineMs = 60_000): Promise<void> {
  const end = Date.now() + deadlineMs;
  let exitedEarly = false;
  void p.exited.then(() => (exitedEarly = true));
  while (Date.now() < end && !exitedEarly) {
    try {
      const response = await fetch(`${p.url}/health`);
      if (response.status === 200) return;
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  throw new Error(`service did not become healthy:\n${p.output()}`);
}

/** Sends a signal and waits for the process to exit. */
export async function stopProcess(p: ServiceProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | string> {
  if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill(signal);
  return p.exited;
}
