/**
 * pino JSON logs. The request id of the current request (or job dispatch) rides in an
 * AsyncLocalStorage so that repository, bridge and broker logs carry it without threading it
 * through every call.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { pino, type Logger } from 'pino';

export type { Logger };

export interface RequestContext {
  requestId: string;
}

export const requestContext = new AsyncLocalStorage<RequestContext>();

/** The request id of the work in progress, if it was caused by a request. */
export function currentRequestId(): string | undefined {
  return requestContext.getStore()?.requestId;
}

/** Paths that may hold credentials; pino replaces them before a line is written. */
export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'res.headers["set-cookie"]',
  '*.providerConfig',
  '*.provider_config',
  '*.apiKey',
  '*.api_key',
  '*.password',
  '*.token',
  'config.providerConfig',
];

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'graphcap-data-service' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      mixin() {
        const requestId = currentRequestId();
        return requestId ? { requestId } : {};
      },
      serializers: { err: serializeError },
      formatters: {
        level: (label) => ({ level: label }),
      },
    },
    destination,
  );
}

/** pino's error serializer, minus the live objects some errors carry (pg attaches its client). */
function serializeError(error: unknown) {
  const serialized = pino.stdSerializers.err(error as Error) as unknown as Record<string, unknown>;
  delete serialized.client;
  return serialized;
}
