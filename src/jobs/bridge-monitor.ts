/**
 * Watches the Inference Bridge: at start-up and every BRIDGE_CHECK_INTERVAL_MS it asks graphcap's
 * bridge for its health route and its perspective list (`/api/v1/health`,
 * `/api/v1/perspectives/list`). `ok`: both answer; `unreachable`: no answer or a 5xx (the API works
 * on, jobs wait as for any outage); `incompatible`: the routes are not there (a 404: not graphcap's
 * bridge, or an address with the wrong path), and the dispatcher then claims nothing. The bridge
 * loads its perspectives once, at its own start: the enabled perspectives it does not list are
 * reported, since their items would fail.
 */
import ky, { HTTPError } from 'ky';
import type { Db } from '../db/client.js';
import { listEnabledPerspectiveNames } from '../db/perspectives.js';
import type { Logger } from '../logger.js';

export type BridgeState = 'unknown' | 'ok' | 'unreachable' | 'incompatible';
export const BRIDGE_STATES: readonly BridgeState[] = ['unknown', 'ok', 'unreachable', 'incompatible'];

export interface BridgeStatus {
  state: BridgeState;
  /** The address checked (credentials never shown). */
  url: string;
  checkedAt: string | null;
  /** Why it is not ok. */
  detail: string | null;
  /** Enabled perspectives the bridge does not list (it loads perspectives at its start only). */
  unknownPerspectives: string[];
}

/** The bridge's API prefix (graphcap mounts its routers under /api/v1). */
export const BRIDGE_API = '/api/v1';
const CHECK_TIMEOUT_MS = 5_000;
const SHOWN_PERSPECTIVES = 50;

export class BridgeMonitor {
  private status: BridgeStatus;
  private timer: NodeJS.Timeout | undefined;
  private checking: Promise<void> | undefined;
  private readonly client: typeof ky;

  constructor(
    private readonly options: { baseUrl: string; db: Db; logger: Logger; intervalMs: number },
  ) {
    this.status = { state: 'unknown', url: withoutCredentials(options.baseUrl), checkedAt: null, detail: null, unknownPerspectives: [] };
    this.client = ky.create({ prefixUrl: `${options.baseUrl}${BRIDGE_API}`, timeout: CHECK_TIMEOUT_MS, retry: 0 });
  }

  get state(): BridgeState {
    return this.status.state;
  }

  snapshot(): BridgeStatus {
    return structuredClone(this.status);
  }

  /** Checks now and then every interval. */
  async start(): Promise<void> {
    await this.check();
    this.timer = setInterval(() => void this.check(), this.options.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** A caption call met a missing route: the bridge is not what it should be, until a check says otherwise. */
  reportMissingRoute(detail: string): void {
    if (this.status.state === 'incompatible') return;
    this.set('incompatible', detail);
  }

  check(): Promise<void> {
    this.checking ??= this.runCheck().finally(() => (this.checking = undefined));
    return this.checking;
  }

  private async runCheck(): Promise<void> {
    try {
      await this.client.get('health');
      const list = await this.client.get('perspectives/list').json<{ perspectives?: { name?: unknown }[] }>();
      if (!Array.isArray(list?.perspectives)) {
        this.set('incompatible', 'GET /api/v1/perspectives/list answered without a perspectives list');
        return;
      }
      const known = new Set(list.perspectives.map((p) => p.name).filter((n): n is string => typeof n === 'string'));
      const ours = await listEnabledPerspectiveNames(this.options.db);
      this.set('ok', null, ours.filter((name) => !known.has(name)));
    } catch (error) {
      if (error instanceof HTTPError && error.response.status < 500) {
        const route = new URL(error.request.url).pathname;
        this.set('incompatible', `GET ${route} answered ${error.response.status}: is INFERENCE_BRIDGE_URL graphcap's Inference Bridge?`);
      } else if (error instanceof HTTPError) {
        this.set('unreachable', `the bridge answered ${error.response.status}`);
      } else {
        const e = error as { name?: string; cause?: { code?: string }; message?: string };
        this.set('unreachable', e.name === 'TimeoutError' ? `no answer within ${CHECK_TIMEOUT_MS} ms` : (e.cause?.code ?? e.message ?? 'no answer'));
      }
    }
  }

  private set(state: BridgeState, detail: string | null, unknownPerspectives = this.status.unknownPerspectives): void {
    const before = this.status;
    this.status = {
      ...before,
      state,
      detail,
      checkedAt: new Date().toISOString(),
      unknownPerspectives: unknownPerspectives.slice(0, SHOWN_PERSPECTIVES),
    };
    const { logger } = this.options;
    if (before.state !== state) {
      const line = { bridge: this.status.url, state, detail };
      if (state === 'ok') logger.info(line, 'Inference Bridge reachable');
      else logger.warn(line, state === 'incompatible' ? 'Inference Bridge incompatible: no items are dispatched' : 'Inference Bridge unreachable');
    }
    if (unknownPerspectives.length > 0 && unknownPerspectives.join() !== before.unknownPerspectives.join()) {
      logger.warn(
        { perspectives: this.status.unknownPerspectives },
        'the Inference Bridge does not know these enabled perspectives (it loads perspectives at its start): restart it',
      );
    }
  }
}

/** A URL for logs and answers: user and password dropped. */
export function withoutCredentials(url: string): string {
  try {
    const u = new URL(url);
    u.username = '';
    u.password = '';
    return u.toString().replace(/\/$/, '');
  } catch {
    return '(unreadable URL)';
  }
}
