/** Helpers for the data-management tests: brute-force ordering, paging, image headers read by hand. */
import { readFile } from 'node:fs/promises';
import { api } from './service.js';

export type Key = string | number | null | undefined;

/** Code-point order, as the API promises for text ("C" collation). */
export function compare(a: Key, b: Key): number {
  if (a === b) return 0;
  return (a as string | number) < (b as string | number) ? -1 : 1;
}

/**
 * Sorts by `key` (nulls last whatever the direction), then by each tie-breaker, all in `order`:
 * what the API's lists promise, computed the plain way.
 */
export function bruteSort<T>(rows: T[], key: (r: T) => Key, ties: ((r: T) => Key)[], order: 'asc' | 'desc'): T[] {
  const sign = order === 'desc' ? -1 : 1;
  return [...rows].sort((a, b) => {
    const ka = key(a);
    const kb = key(b);
    if ((ka === null || ka === undefined) !== (kb === null || kb === undefined)) return ka === null || ka === undefined ? 1 : -1;
    const first = sign * compare(ka, kb);
    if (first !== 0) return first;
    for (const tie of ties) {
      const c = sign * compare(tie(a), tie(b));
      if (c !== 0) return c;
    }
    return 0;
  });
}

export function page<T>(rows: T[], pageNumber: number, limit: number): T[] {
  return rows.slice((pageNumber - 1) * limit, pageNumber * limit);
}

/** A query string; arrays become repeated parameters. */
export function qs(params: Record<string, string | number | boolean | (string | number)[] | undefined>): string {
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined) continue;
    for (const one of Array.isArray(v) ? v : [v]) search.append(k, String(one));
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

/** GET that must answer 200; returns the body. */
export async function getOk(url: string, route: string): Promise<any> {
  const response = await api(url, 'GET', route);
  if (response.status !== 200) throw new Error(`GET ${route}: ${response.status} ${JSON.stringify(response.body)}`);
  return response.body;
}

/**
 * Width and height straight from the file's header, written here independently of the service's
 * image-size: JPEG start-of-frame markers, PNG's IHDR, WebP's VP8, VP8L and VP8X chunks.
 */
export async function headerDimensions(file: string): Promise<{ width: number; height: number }> {
  const b = await readFile(file);
  if (b[0] === 0xff && b[1] === 0xd8) {
    let at = 2;
    while (at < b.length) {
      if (b[at] !== 0xff) throw new Error(`bad JPEG marker at ${at}`);
      const marker = b[at + 1]!;
      const length = b.readUInt16BE(at + 2);
      // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC): precision, height, width.
      if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) {
        return { height: b.readUInt16BE(at + 5), width: b.readUInt16BE(at + 7) };
      }
      at += 2 + length;
    }
    throw new Error('no JPEG frame header');
  }
  if (b.toString('hex', 0, 8) === '89504e470d0a1a0a' && b.toString('ascii', 12, 16) === 'IHDR') {
    return { width: b.readUInt32BE(16), height: b.readUInt32BE(20) };
  }
  if (b.toString('ascii', 0, 4) === 'RIFF' && b.toString('ascii', 8, 12) === 'WEBP') {
    const chunk = b.toString('ascii', 12, 16);
    if (chunk === 'VP8 ') return { width: b.readUInt16LE(26) & 0x3fff, height: b.readUInt16LE(28) & 0x3fff };
    if (chunk === 'VP8L') {
      const bits = b.readUInt32LE(21);
      return { width: (bits & 0x3fff) + 1, height: ((bits >>> 14) & 0x3fff) + 1 };
    }
    if (chunk === 'VP8X') return { width: b.readUIntLE(24, 3) + 1, height: b.readUIntLE(27, 3) + 1 };
  }
  throw new Error(`not a JPEG or WebP file: ${file}`);
}
