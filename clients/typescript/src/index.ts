/**
 * graphcap Data Service: a fetch-based REST client for TypeScript services that do not use tRPC.
 *
 * Hand-written and deliberately tiny: every path, parameter, body and response type comes from
 * ./schema.d.ts, which openapi-typescript generates from openapi/openapi.json (`npm run clients`;
 * never edit it). Requests go through openapi-fetch: each call resolves to `{ data }` on success or
 * `{ error }` (a typed problem-details body) on an HTTP error, plus the raw `response`.
 */
import createClient, { type Client, type ClientOptions } from 'openapi-fetch';
import type { components, paths } from './schema.js';

export type { components, operations, paths } from './schema.js';

type Schemas = components['schemas'];
export type Job = Schemas['Job'];
export type JobItem = Schemas['JobItem'];
export type JobDetail = Schemas['JobDetail'];
export type JobPage = Schemas['JobPage'];
export type JobItemPage = Schemas['JobItemPage'];
export type JobStatus = Schemas['JobStatus'];
export type ItemStatus = Schemas['ItemStatus'];
export type JobType = Schemas['JobType'];
export type Provider = Schemas['Provider'];
export type Health = Schemas['Health'];
/** Every REST error's body (RFC 9457 problem details). */
export type Problem = Schemas['Problem'];

export type GraphcapClient = Client<paths>;

export interface GraphcapClientOptions extends Omit<ClientOptions, 'baseUrl'> {
  /** Bearer token, needed when the service runs with API_TOKEN or INTERNAL_TOKEN. */
  token?: string;
}

/**
 * A client of the service at `baseUrl` (e.g. `http://127.0.0.1:32550`):
 *
 * ```ts
 * const api = createGraphcapClient('http://127.0.0.1:32550');
 * const { data, error } = await api.GET('/api/perspectives/batch/status/{jobId}', { params: { path: { jobId } } });
 * ```
 */
export function createGraphcapClient(baseUrl: string, options: GraphcapClientOptions = {}): GraphcapClient {
  const { token, headers, ...rest } = options;
  const client = createClient<paths>({ baseUrl, headers, ...rest });
  if (token) {
    client.use({
      onRequest({ request }) {
        request.headers.set('Authorization', `Bearer ${token}`);
        return request;
      },
    });
  }
  return client;
}
