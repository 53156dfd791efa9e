/**
 * `npm run demo`: the service's main job end to end, from a fresh clone. One process starts the
 * stand-in Inference Bridge (answering as graphcap's real bridge does, with the example workspace's
 * captions, after a little latency) and the service on its embedded PostgreSQL with the example
 * workspace; creates a job over the example dataset; prints its progress until it ends, then a
 * caption it stored; and stays up with the board and Swagger UI to look at, until Ctrl-C.
 *
 * The service's settings come from the environment as for `npm start` (PORT, EMBEDDED_PG_DATA ...);
 * INFERENCE_BRIDGE_URL is the stand-in's. DEMO_PERSPECTIVES (comma-separated) and
 * DEMO_LATENCY_MS change the job and the bridge's pace.
 */
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/logger.js';
import { startService } from '../src/service.js';
import { StandInBridge } from '../test/stand-ins/bridge.js';

const perspectives = (process.env.DEMO_PERSPECTIVES ?? 'art_critic,graph_caption,storytelling').split(',').map((p) => p.trim());
const latency = Number(process.env.DEMO_LATENCY_MS ?? 400);
const print = (line: string) => process.stdout.write(`${line}\n`);

const bridge = await StandInBridge.start({ latencyMs: [latency, latency * 2] });
// The service logs warnings and worse here: the demo prints what happens.
const config = loadConfig({ LOG_LEVEL: 'warn', ...process.env, INFERENCE_BRIDGE_URL: bridge.url });
const logger = createLogger(config.LOG_LEVEL);
print(`starting the service on ${config.DATABASE_URL ? 'DATABASE_URL' : `its embedded PostgreSQL (${config.EMBEDDED_PG_DATA})`}, workspace ${config.WORKSPACE_PATH} ...`);
const service = await startService(config, logger).catch(async (error: unknown) => {
  await bridge.close();
  print(`the service did not start: ${(error as Error).message}`);
  print('(is `npm start` or another demo running? Stop it, or set PORT and EMBEDDED_PG_PORT.)');
  process.exit(1);
});

const api = async (method: string, route: string, body?: unknown) => {
  const response = await fetch(`${service.url}${route}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const answer = (await response.json()) as Record<string, any>;
  if (!response.ok) throw new Error(`${method} ${route}: ${response.status} ${answer.detail ?? JSON.stringify(answer)}`);
  return answer;
};

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  print('\nstopping ...');
  await service.close();
  await bridge.close();
  process.exit(0);
};
process.once('SIGINT', () => void stop());
process.once('SIGTERM', () => void stop());

print(`stand-in Inference Bridge on ${bridge.url} (${bridge.perspectives.length} perspectives, ${bridge.fixtureCaptions} example captions)`);
print(`service on ${service.url}\n`);
const job = await api('POST', '/api/perspectives/batch/create', {
  type: 'DATASET_PERSPECTIVE',
  datasetName: 'os_img',
  perspectives,
  config: { provider: 'gemini', model: 'gemini-2.0-flash-exp' },
});
print(`job ${job.jobId}: ${job.totalImages} items (dataset os_img × ${perspectives.join(', ')}), provider gemini\n`);

const started = Date.now();
let last = '';
for (;;) {
  const { job: now } = await api('GET', `/api/perspectives/batch/status/${job.jobId}?limit=1`);
  const bar = '#'.repeat(Math.round(now.progress / 5)).padEnd(20, '.');
  const line = `[${bar}] ${String(now.progress).padStart(5)}%  ${now.status.padEnd(9)} ${now.processedImages} done, ${now.failedImages} failed of ${now.totalImages}`;
  if (line !== last) print(`${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s  ${line}`);
  last = line;
  if (!['pending', 'running'].includes(now.status)) break;
  await new Promise((resolve) => setTimeout(resolve, 250));
}

const captions = await api('GET', `/api/captions?jobId=${job.jobId}&perspective=graph_caption&limit=1`);
const sample = captions.items[0] as { imagePath: string; perspective: string; result: Record<string, unknown> } | undefined;
if (sample) {
  print(`\na caption it stored (${sample.perspective} of ${sample.imagePath}):`);
  print(`  ${JSON.stringify(sample.result).slice(0, 300)}...`);
}
print(`\nlook around (Ctrl-C stops it):`);
print(`  queue board   ${service.url}/board`);
print(`  Swagger UI    ${service.url}/docs`);
print(`  the job       ${service.url}/api/perspectives/batch/status/${job.jobId}`);
print(`  its captions  ${service.url}/api/captions?jobId=${job.jobId}`);
