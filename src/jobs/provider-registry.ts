/**
 * What a bridge call needs of the stored providers (src/db/providers.ts), cached per process: the
 * provider table is read again when a replica says a provider changed (NOTIFY, see invalidate)
 * or when the copy is older than `maxAgeMs`, so a key rotated mid-job is used by the next call.
 * Keys are opened here, with this replica's SECRETS_KEY, and never leave as anything but the
 * bridge's provider_config.
 */
import type { Db } from '../db/client.js';
import { loadAllProviders, type ProviderRow } from '../db/providers.js';
import { isSealed, open } from '../secrets.js';

export interface CallProvider {
  name: string;
  isEnabled: boolean;
  misconfigured: boolean;
  requestsPerMinute: number | null;
  /** The bridge's ProviderConfig (snake_case), key in the clear; undefined when the key cannot be opened here. */
  bridgeConfig: Record<string, unknown> | undefined;
  /** Why bridgeConfig is undefined. */
  problem?: string;
}

export class ProviderRegistry {
  private providers = new Map<string, CallProvider>();
  private loadedAt = -Infinity;
  private loading: Promise<void> | undefined;
  private stale = true;

  constructor(
    private readonly db: Db,
    private readonly secretsKey: Buffer | undefined,
    private readonly previousKeys: readonly Buffer[] = [],
    private readonly maxAgeMs = 2_000,
  ) {}

  /**
   * The provider of that name, as recently as the cache allows; undefined when there is none. A
   * name it does not have is looked for once more in the table: a job can be claimed (a poll) before
   * the NOTIFY of its provider's create arrives.
   */
  async get(name: string): Promise<CallProvider | undefined> {
    await this.fresh();
    if (!this.providers.has(name)) {
      this.stale = true;
      await this.fresh();
    }
    return this.providers.get(name);
  }

  /**
   * Until a read that began after the last invalidation has ended: a read already under way when a
   * provider changed (a key refused, say) may not have seen the change, and one still under way has
   * not filled the cache. A few rounds at most.
   */
  private async fresh(): Promise<void> {
    // A read under way counts as stale too: its answer is not in the cache yet.
    for (let i = 0; i < 3 && (this.loading || this.stale || performance.now() - this.loadedAt > this.maxAgeMs); i++) await this.load();
  }

  /** A provider changed somewhere: read the table again before the next call. */
  invalidate(): void {
    this.stale = true;
  }

  private load(): Promise<void> {
    this.loading ??= (async () => {
      try {
        this.stale = false;
        const startedAt = performance.now();
        const rows = await loadAllProviders(this.db);
        this.providers = new Map(rows.map((row) => [row.name, this.toCallProvider(row)]));
        this.loadedAt = startedAt;
      } catch (error) {
        this.stale = true;
        throw error;
      } finally {
        this.loading = undefined;
      }
    })();
    return this.loading;
  }

  private toCallProvider(row: ProviderRow): CallProvider {
    const base = {
      name: row.name,
      isEnabled: row.isEnabled,
      misconfigured: row.misconfiguredAt !== null,
      requestsPerMinute: row.requestsPerMinute,
    };
    let apiKey = '';
    if (row.apiKey !== null) {
      if (!this.secretsKey || !isSealed(row.apiKey)) return { ...base, bridgeConfig: undefined, problem: `provider ${row.name}'s API key cannot be opened: this replica has no SECRETS_KEY` };
      try {
        apiKey = String(open(row.apiKey, this.secretsKey, this.previousKeys));
      } catch {
        return { ...base, bridgeConfig: undefined, problem: `provider ${row.name}'s API key cannot be opened with this replica's SECRETS_KEY` };
      }
    }
    return { ...base, bridgeConfig: toBridgeProviderConfig(row, apiKey) };
  }
}

/** graphcap's ProviderConfig as its Inference Bridge validates it (snake_case, api_key a string). */
export function toBridgeProviderConfig(row: ProviderRow, apiKey: string): Record<string, unknown> {
  const models = row.models.filter((m) => m.isEnabled).map((m) => m.name);
  const rateLimits =
    row.requestsPerMinute !== null || row.tokensPerMinute !== null
      ? { requests_per_minute: row.requestsPerMinute, tokens_per_minute: row.tokensPerMinute }
      : undefined;
  return {
    name: row.name,
    kind: row.kind,
    environment: row.environment,
    base_url: row.baseUrl,
    api_key: apiKey,
    models,
    // No models listed: let the bridge ask the provider (a local server's own list).
    fetch_models: models.length === 0,
    rate_limits: rateLimits,
  };
}
