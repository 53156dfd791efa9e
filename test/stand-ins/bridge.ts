/**
 * A stand-in Inference Bridge: a real HTTP server on loopback that behaves like graphcap's real
 * bridge by default (test/stand-ins/graphcap-answers.ts): routes under /api/v1 (health, the
 * perspective list, caption-from-path, a provider's test-connection), `provider_config` and `model`
 * required (400), pydantic's 404 for a provider_config it cannot read, unknown perspectives and
 * missing images 404, every provider error a 500 quoting the provider, `raw_text` null. It knows
 * the perspectives of its workspace's library, loaded at its start as the real one does, and
 * answers with the caption (`parsed`) of the workspace's
 * datasets/<dataset>/analysis/batch_<perspective>/captions.jsonl when it has the (image file name,
 * perspective) pair, and with a deterministic synthetic caption otherwise.
 *
 * Latency, transient errors, a rate-limited or unreachable provider, refused API keys, hangs (at a
 * rate or for chosen images), permanent failures (400) for chosen images and "down" (connections
 * refused) are settable in code or at run time with `POST /__control` (JSON; `GET /__control`
 * shows settings and figures); `faultStyle: 'http'` answers throttling and outages as plain HTTP
 * (429 with Retry-After, 503) instead of graphcap's 500s. Every call is recorded with what was in
 * flight when it arrived, for assertions.
 *
 * `npm run bridge` runs it on 127.0.0.1:32560 (BRIDGE_HOST, BRIDGE_PORT, BRIDGE_LATENCY_MS,
 * BRIDGE_WORKSPACE to change).
 */
import { createHash } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as graphcap from './graphcap-answers.js';

/** The repository's example workspace: where the stand-in finds captions and perspectives by default. */
export const EXAMPLE_WORKSPACE = fileURLToPath(new URL('../../examples/workspace', import.meta.url));
export const FIXTURE_ANALYSIS = path.join(EXAMPLE_WORKSPACE, 'datasets', 'os_img', 'analysis');

export interface BridgeSettings {
  /** Milliseconds before each answer: a number, or [min, max] for a uniform spread. */
  latencyMs: number | [number, number];
  /** Fraction of calls answered 503 (transient). */
  errorRate: number;
  /** Fraction of calls never answered, until the client gives up. */
  hangRate: number;
  /** Image file name → message: calls for these images are answered 400 with the message. */
  permanentFailures: Record<string, string>;
  /** Image file names whose calls never answer, until the client gives up. */
  hangImages: string[];
  /** Seed of the random choices (error, hang, latency), so a run can be repeated. */
  seed: number;
  /** Until this Date.now(), every call is answered 429 with `Retry-After: retryAfterSeconds` (a rate-limited provider). */
  throttleUntil: number;
  retryAfterSeconds: number;
  /** Until this Date.now(), the provider cannot be reached (graphcap: 500 "Connection error."; http: 503). */
  unavailableUntil: number;
  /** How throttling, outages and random errors are answered: as graphcap's bridge does (500s quoting the provider), or as plain HTTP. */
  faultStyle: 'graphcap' | 'http';
  /** API keys the provider refuses (401 invalid_api_key inside a 500). */
  rejectedKeys: string[];
  /** Error texts quote the key whole (a careless provider), to check that the service scrubs it. */
  echoKeys: boolean;
  /** Every /api/v1 route answers FastAPI's 404: not graphcap's bridge. */
  incompatible: boolean;
}

/** The request body of caption-from-path. */
export interface CaptionRequestBody {
  perspective: string;
  image_path: string;
  provider?: string;
  provider_config?: Record<string, unknown>;
  model?: string;
  [option: string]: unknown;
}

export type CallOutcome = 'in-flight' | 'ok' | 'transient' | 'throttled' | 'permanent' | 'invalid' | 'aborted';

export interface BridgeCall {
  /** Date.now() when the call arrived, and when it ended. */
  at: number;
  endedAt?: number;
  requestId?: string;
  jobId?: string;
  itemId?: string;
  body: CaptionRequestBody;
  /** provider_config.api_key as it arrived. */
  apiKey?: string;
  /** Calls in flight when this one arrived, itself included. */
  inFlight: number;
  /** Set when it was chosen to hang. */
  hung: boolean;
  outcome: CallOutcome;
  /** The Retry-After it was answered with, in milliseconds. */
  retryAfterMs?: number;
}

export interface BridgeStats {
  calls: number;
  inFlight: number;
  maxInFlight: number;
  /** Most calls of one job in flight at once, by job id (X-Job-Id). */
  maxInFlightPerJob: Record<string, number>;
  /** Most distinct jobs with a call in flight at once. */
  maxJobsInFlight: number;
  /** Calls that arrived while a call for the same item was still in flight. */
  duplicateInFlight: number;
  outcomes: Record<CallOutcome, number>;
}

const DEFAULTS: BridgeSettings = {
  latencyMs: 0,
  errorRate: 0,
  hangRate: 0,
  permanentFailures: {},
  hangImages: [],
  seed: 1,
  throttleUntil: 0,
  retryAfterSeconds: 1,
  unavailableUntil: 0,
  faultStyle: 'graphcap',
  rejectedKeys: [],
  echoKeys: false,
  incompatible: false,
};

export class StandInBridge {
  readonly calls: BridgeCall[] = [];
  private settings: BridgeSettings;
  private random: () => number;
  private server: Server;
  private readonly sockets = new Set<Socket>();
  private readonly captions: Map<string, Record<string, unknown>>;
  /** The perspectives it knows: its library's, loaded at its start (the real bridge's way). */
  readonly perspectives: string[];
  private readonly jobsInFlight = new Map<string, number>();
  private readonly itemsInFlight = new Set<string>();
  private current = 0;
  private stats = emptyStats();
  private port: number;
  private readonly host: string;
  private upTimer: NodeJS.Timeout | undefined;

  private constructor(
    captions: Map<string, Record<string, unknown>>,
    perspectives: string[],
    settings: BridgeSettings,
    host: string,
    port: number,
  ) {
    this.captions = captions;
    this.perspectives = perspectives;
    this.settings = settings;
    this.random = mulberry32(settings.seed);
    this.host = host;
    this.port = port;
    this.server = this.createServer();
  }

  /**
   * Starts it on `host` (127.0.0.1) and `port` (0: any free port), with the captions and the
   * perspective library of `workspace` (the example workspace by default), or the `perspectives` given.
   */
  static async start(
    options: Partial<BridgeSettings> & { port?: number; host?: string; workspace?: string; perspectives?: string[] } = {},
  ): Promise<StandInBridge> {
    const { port = 0, host = '127.0.0.1', workspace = EXAMPLE_WORKSPACE, perspectives: given, ...settings } = options;
    const captions = await loadWorkspaceCaptions(workspace);
    // `perspectives`: a bridge that loaded another library (or started before a perspective was added).
    const perspectives = given ?? (await graphcap.loadPerspectiveNames(path.join(workspace, 'perspective_library')));
    const bridge = new StandInBridge(captions, perspectives, { ...DEFAULTS, ...settings }, host, port);
    await bridge.listen();
    return bridge;
  }

  get url(): string {
    return `http://${this.host}:${this.port}`;
  }

  /** Changes settings from now on; a new seed restarts the random sequence. */
  set(settings: Partial<BridgeSettings>): void {
    this.settings = { ...this.settings, ...settings };
    if (settings.seed !== undefined) this.random = mulberry32(settings.seed);
  }

  getSettings(): BridgeSettings {
    return structuredClone(this.settings);
  }

  getStats(): BridgeStats {
    return structuredClone({ ...this.stats, inFlight: this.current });
  }

  /** Forgets the recorded calls and figures (not the settings). */
  reset(): void {
    this.calls.length = 0;
    this.stats = emptyStats();
  }

  /** The caption it answers for an image file name and perspective. */
  captionFor(imageFile: string, perspective: string): Record<string, unknown> {
    return this.captions.get(key(imageFile, perspective)) ?? syntheticCaption(imageFile, perspective);
  }

  /** How many (image, perspective) pairs have a real caption from the fixture. */
  get fixtureCaptions(): number {
    return this.captions.size;
  }

  /** Whether the fixture has a real caption for the pair. */
  knows(imageFile: string, perspective: string): boolean {
    return this.captions.has(key(imageFile, perspective));
  }

  /** Refuses connections: the server closes, open connections are cut. */
  async down(): Promise<void> {
    clearTimeout(this.upTimer);
    if (!this.server.listening) return;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const socket of this.sockets) socket.destroy();
    await closed;
  }

  /** Listens again on the same port. */
  async up(): Promise<void> {
    clearTimeout(this.upTimer);
    if (this.server.listening) return;
    this.server = this.createServer();
    await this.listen();
  }

  async close(): Promise<void> {
    await this.down();
  }

  private createServer(): Server {
    const server = createServer((req, res) => void this.handle(req, res));
    server.on('connection', (socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
    return server;
  }

  private listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.port, this.host, () => {
        this.port = (this.server.address() as AddressInfo).port;
        resolve();
      });
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const route = `${req.method} ${req.url?.split('?')[0]}`;
    let text: string;
    try {
      text = await readBody(req);
    } catch {
      return;
    }
    if (route === 'GET /__control') return json(res, 200, { settings: this.settings, stats: this.getStats() });
    if (route === 'POST /__control') return this.control(res, text);
    if (this.settings.incompatible) return send(res, graphcap.noRoute);
    if (route === 'GET /api/v1/health') return json(res, 200, { status: 'healthy' });
    if (route === 'GET /api/v1/perspectives/list') {
      return json(res, 200, { perspectives: this.perspectives.map((name) => ({ name, display_name: name, version: '1', description: '' })) });
    }
    if (route === 'POST /api/v1/perspectives/caption-from-path') return this.caption(req, res, text);
    if (/^POST \/api\/v1\/providers\/[^/]+\/test-connection$/.test(route)) return this.testConnection(res, route, text);
    send(res, graphcap.noRoute);
  }

  /** As the real one: a config it can read is a "success", whether or not the key works (it asks the provider nothing). */
  private testConnection(res: ServerResponse, route: string, text: string): void {
    const config = parseObject(text);
    const missing = ['name', 'kind', 'environment', 'base_url', 'api_key'].filter((f) => typeof config?.[f] !== 'string');
    if (!config || missing.length > 0) return send(res, graphcap.validationError(missing));
    const provider = decodeURIComponent(route.split('/')[4]!);
    json(res, 200, { status: 'success', message: 'Connection successful', result: { provider, connected: true, success: true } });
  }

  private control(res: ServerResponse, text: string): void {
    let body: Partial<BridgeSettings> & { downForMs?: number; throttleForMs?: number; unavailableForMs?: number; reset?: boolean };
    try {
      body = JSON.parse(text || '{}');
    } catch {
      return json(res, 400, { detail: 'body must be JSON' });
    }
    const { downForMs, throttleForMs, unavailableForMs, reset, ...settings } = body;
    this.set(settings);
    if (throttleForMs) this.set({ throttleUntil: Date.now() + throttleForMs });
    if (unavailableForMs) this.set({ unavailableUntil: Date.now() + unavailableForMs });
    if (reset) this.reset();
    json(res, 200, { settings: this.settings, stats: this.getStats() });
    if (downForMs) {
      res.once('finish', () => {
        void this.down().then(() => {
          this.upTimer = setTimeout(() => void this.up(), downForMs);
        });
      });
    }
  }

  private async caption(req: IncomingMessage, res: ServerResponse, text: string): Promise<void> {
    let body: CaptionRequestBody;
    try {
      body = JSON.parse(text) as CaptionRequestBody;
    } catch {
      return json(res, 422, { detail: 'body must be JSON' });
    }
    const header = (name: string) => (req.headers[name] as string | undefined) ?? undefined;
    const jobId = header('x-job-id');
    const itemKey = header('x-item-id') ?? `${body.image_path}\u0000${body.perspective}`;

    this.current += 1;
    this.stats.calls += 1;
    this.stats.maxInFlight = Math.max(this.stats.maxInFlight, this.current);
    if (this.itemsInFlight.has(itemKey)) this.stats.duplicateInFlight += 1;
    this.itemsInFlight.add(itemKey);
    if (jobId) {
      const n = (this.jobsInFlight.get(jobId) ?? 0) + 1;
      this.jobsInFlight.set(jobId, n);
      this.stats.maxInFlightPerJob[jobId] = Math.max(this.stats.maxInFlightPerJob[jobId] ?? 0, n);
      this.stats.maxJobsInFlight = Math.max(this.stats.maxJobsInFlight, this.jobsInFlight.size);
    }
    const call: BridgeCall = {
      at: Date.now(),
      requestId: header('x-request-id'),
      jobId,
      itemId: header('x-item-id'),
      body,
      inFlight: this.current,
      hung: false,
      outcome: 'in-flight',
    };
    this.calls.push(call);

    let timer: NodeJS.Timeout | undefined;
    let ended = false;
    const end = (outcome: CallOutcome) => {
      if (ended) return;
      ended = true;
      clearTimeout(timer);
      call.outcome = outcome;
      call.endedAt = Date.now();
      this.stats.outcomes[outcome] += 1;
      this.current -= 1;
      this.itemsInFlight.delete(itemKey);
      if (jobId) {
        const n = this.jobsInFlight.get(jobId)! - 1;
        if (n === 0) this.jobsInFlight.delete(jobId);
        else this.jobsInFlight.set(jobId, n);
      }
    };
    // The client gave up (timeout, abort) or the connection was cut before an answer.
    res.once('close', () => end('aborted'));

    const answer = (outcome: CallOutcome, status: number, payload: unknown) => {
      if (ended) return;
      end(outcome);
      json(res, status, payload);
    };

    const refused = await this.requestProblem(body);
    if (refused) return answer('invalid', refused.status, refused.body);
    const apiKey = String(body.provider_config!.api_key);
    call.apiKey = apiKey;
    const http = this.settings.faultStyle === 'http';
    // A rate-limited, unreachable or key-refusing provider answers at once.
    if (Date.now() < this.settings.throttleUntil) {
      call.retryAfterMs = this.settings.retryAfterSeconds * 1000;
      if (http) {
        res.setHeader('retry-after', String(this.settings.retryAfterSeconds));
        return answer('throttled', 429, { detail: 'rate limit reached (stand-in bridge)' });
      }
      const limited = graphcap.rateLimited(body.image_path, String(body.model), this.settings.retryAfterSeconds);
      return answer('throttled', limited.status, limited.body);
    }
    if (Date.now() < this.settings.unavailableUntil) {
      if (http) return answer('transient', 503, { detail: 'the provider is down (stand-in bridge)' });
      const down = graphcap.connectionError(body.image_path);
      return answer('transient', down.status, down.body);
    }
    if (this.settings.rejectedKeys.includes(apiKey)) {
      const bad = graphcap.invalidKey(body.image_path, apiKey, this.settings.echoKeys);
      return answer('permanent', bad.status, bad.body);
    }
    const imageFile = path.basename(body.image_path);
    const roll = this.random();
    const delay = this.latency();
    if (roll < this.settings.hangRate || this.settings.hangImages.includes(imageFile)) {
      call.hung = true;
      return;
    }
    timer = setTimeout(() => {
      const permanent = this.settings.permanentFailures[imageFile];
      if (permanent !== undefined) return answer('permanent', 400, { detail: permanent });
      if (roll < this.settings.hangRate + this.settings.errorRate) {
        if (http) return answer('transient', 503, { detail: 'the provider is overloaded (stand-in bridge)' });
        const failed = graphcap.serverError(body.image_path);
        return answer('transient', failed.status, failed.body);
      }
      const result = this.captionFor(imageFile, body.perspective);
      answer('ok', 200, { perspective: body.perspective, provider: body.provider, result, raw_text: null });
    }, delay);
  }

  /**
   * What the real bridge refuses before any model call, in its order: provider_config or model
   * missing (400), the image not there (404), a provider_config pydantic cannot read (404), an
   * unknown perspective (404).
   */
  private async requestProblem(body: CaptionRequestBody): Promise<graphcap.Answer | undefined> {
    const missing = ['perspective', 'image_path', 'provider', 'provider_config', 'model'].filter((f) => body[f] === undefined || body[f] === null);
    if (missing.length > 0) return graphcap.validationError(missing);
    const isFile = await stat(String(body.image_path)).then((s) => s.isFile(), () => false);
    if (!isFile) return graphcap.imageNotFound(String(body.image_path));
    const config = body.provider_config;
    if (typeof config !== 'object' || config === null || Object.keys(config).length === 0) {
      return { status: 400, body: { detail: `Provider configuration not provided for '${body.provider}'. Please include provider_config in the request.` } };
    }
    if (!body.model) return { status: 400, body: { detail: `Model name not provided for '${body.provider}'. Please include model in the request.` } };
    const unreadable = graphcap.providerConfigProblem(config);
    if (unreadable) return unreadable;
    if (!this.perspectives.includes(body.perspective)) return graphcap.unknownPerspective(body.perspective, this.perspectives);
    return undefined;
  }

  private latency(): number {
    const l = this.settings.latencyMs;
    if (typeof l === 'number') return l;
    return l[0] + Math.floor(this.random() * (l[1] - l[0] + 1));
  }
}

/**
 * (image file name, perspective) → `parsed`, from every datasets/<dataset>/analysis/batch_<perspective>/captions.jsonl
 * of the workspace; a later line wins. A workspace without them: every caption is synthetic.
 */
export async function loadWorkspaceCaptions(workspace: string): Promise<Map<string, Record<string, unknown>>> {
  const captions = new Map<string, Record<string, unknown>>();
  const datasets = path.join(workspace, 'datasets');
  for (const dataset of (await readdir(datasets).catch(() => [])).sort()) {
    const analysis = path.join(datasets, dataset, 'analysis');
    for (const folder of (await readdir(analysis).catch(() => [])).sort()) {
      if (!folder.startsWith('batch_')) continue;
      const perspective = folder.slice('batch_'.length);
      const text = await readFile(path.join(analysis, folder, 'captions.jsonl'), 'utf8').catch(() => '');
      for (const line of text.split('\n')) {
        if (!line.trim()) continue;
        try {
          const entry = JSON.parse(line) as { filename: string; parsed: Record<string, unknown> };
          captions.set(key(path.basename(entry.filename), perspective), entry.parsed);
        } catch {
          // a torn line: skipped
        }
      }
    }
  }
  return captions;
}

function parseObject(text: string): Record<string, unknown> | undefined {
  try {
    const value = JSON.parse(text) as unknown;
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function send(res: ServerResponse, answer: graphcap.Answer): void {
  json(res, answer.status, answer.body);
}

function syntheticCaption(imageFile: string, perspective: string): Record<string, unknown> {
  const digest = createHash('sha256').update(`${imageFile}\u0000${perspective}`).digest('hex');
  return {
    caption: `A synthetic ${perspective} caption of ${imageFile}.`,
    tags: [perspective, `tag-${digest.slice(0, 6)}`],
    fingerprint: digest.slice(0, 16),
  };
}

function key(imageFile: string, perspective: string): string {
  return `${imageFile}\u0000${perspective}`;
}

function emptyStats(): Omit<BridgeStats, 'inFlight'> {
  return {
    calls: 0,
    maxInFlight: 0,
    maxInFlightPerJob: {},
    maxJobsInFlight: 0,
    duplicateInFlight: 0,
    outcomes: { 'in-flight': 0, ok: 0, transient: 0, throttled: 0, permanent: 0, invalid: 0, aborted: 0 },
  };
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => (text += chunk));
    req.on('end', () => resolve(text));
    req.on('error', reject);
  });
}

function json(res: ServerResponse, status: number, payload: unknown): void {
  if (res.destroyed) return;
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(payload));
}

/** A small seeded PRNG (mulberry32): the same seed gives the same sequence. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// `npm run bridge`: run it for a person to watch, logging one line per call (never provider_config).
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const bridge = await StandInBridge.start({
    host: process.env.BRIDGE_HOST ?? '127.0.0.1',
    port: Number(process.env.BRIDGE_PORT ?? 32560),
    latencyMs: Number(process.env.BRIDGE_LATENCY_MS ?? 1000),
    workspace: process.env.BRIDGE_WORKSPACE || EXAMPLE_WORKSPACE,
  });
  let shown = 0;
  setInterval(() => {
    for (const call of bridge.calls.slice(shown)) {
      if (call.outcome === 'in-flight') break;
      shown += 1;
      const image = path.basename(call.body.image_path ?? '?');
      process.stdout.write(
        `${new Date(call.at).toISOString()} ${call.outcome.padEnd(9)} ${call.body.perspective} ${image} ` +
          `(${(call.endedAt ?? call.at) - call.at} ms, ${call.inFlight} in flight, request ${call.requestId ?? '-'})\n`,
      );
    }
  }, 200);
  process.stdout.write(
    `stand-in Inference Bridge on ${bridge.url} (latency ${process.env.BRIDGE_LATENCY_MS ?? 1000} ms, ` +
      `${bridge.fixtureCaptions} workspace captions, ${bridge.perspectives.length} perspectives)\n` +
      `  change it at run time: curl -X POST ${bridge.url}/__control -d '{"errorRate":0.3,"hangRate":0.1}'\n`,
  );
  const stop = () => void bridge.close().then(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
