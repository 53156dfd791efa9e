/**
 * Writes the captions the queue makes back to graphcap's files, `<image folder>/analysis/
 * batch_<perspective>/captions.jsonl`, in its line format, so its Media Server and studio show them.
 * Every replica runs one; they take turns (an advisory lock), a batch of the oldest waiting captions
 * a round, and mark them written in the transaction that took them, after the files are written
 * (src/workspace/caption-writer.ts makes a repeated write harmless). Never a reason for an item to
 * fail: a file that cannot be written is logged, counted, and tried again later, its captions kept
 * waiting. With write-back off (WORKSPACE_WRITE_CAPTIONS, or a read-only workspace), the waiting
 * captions are let go.
 */
import { access, constants } from 'node:fs/promises';
import path from 'node:path';
import type { Counter } from 'prom-client';
import { recordCaptionFiles } from '../db/caption-imports.js';
import { dropPendingExports, markExported, takePendingExports, type PendingExport } from '../db/caption-exports.js';
import type { Db } from '../db/client.js';
import type { Logger } from '../logger.js';
import { captionFileOf, captionKey, formatCaptionLine } from '../workspace/caption-files.js';
import { CaptionFileIndexes, writeCaptionLines } from '../workspace/caption-writer.js';

/** Captions written per round. */
const BATCH = 500;
/** A file that failed waits this long before the next try, doubling up to RETRY_MAX_MS. */
const RETRY_BASE_MS = 1_000;
const RETRY_MAX_MS = 5 * 60_000;

export type WriteMode = 'auto' | 'true' | 'false';

export interface CaptionExporterOptions {
  db: Db;
  root: string;
  mode: WriteMode;
  intervalMs: number;
  logger: Logger;
  written?: Counter<'outcome'>;
}

export class CaptionExporter {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<number> | undefined;
  private stopped = false;
  private enabled = false;
  /** Per file: no write before this (Date.now()), and how many tries failed in a row. */
  private readonly failing = new Map<string, { until: number; failures: number; target: { folder: string; perspective: string } }>();
  /** The files written last, so that appending to them again needs no read. */
  private readonly indexes = new CaptionFileIndexes();

  constructor(private readonly options: CaptionExporterOptions) {}

  /** Decides whether to write (auto: the workspace's datasets folder is writable), then runs a round every interval. */
  async start(): Promise<void> {
    const { mode, root, logger } = this.options;
    this.enabled = mode === 'true' || (mode === 'auto' && (await writable(path.join(root, 'datasets'))));
    if (!this.enabled) {
      const why = mode === 'false' ? 'WORKSPACE_WRITE_CAPTIONS=false, or the repository\'s example workspace' : `${path.join(root, 'datasets')} is not writable`;
      logger.info({ reason: why }, 'captions are not written back to the workspace');
    }
    this.schedule(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  get writing(): boolean {
    return this.enabled;
  }

  /** One round now (tests; the on-demand export); how many captions it took. */
  flush(): Promise<number> {
    this.running ??= this.round().finally(() => (this.running = undefined));
    return this.running;
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      void this.flush()
        .catch((error: unknown) => {
          this.options.logger.error({ err: error }, 'caption write-back round failed');
          return 0;
        })
        // A full round leaves more waiting: the next goes at once, so a fast job is not held to a batch a tick.
        .then((taken) => this.schedule(taken >= BATCH ? 0 : this.options.intervalMs));
    }, ms);
    this.timer.unref();
  }

  private async round(): Promise<number> {
    const { db } = this.options;
    if (!this.enabled) {
      await dropPendingExports(db, BATCH * 10);
      return 0;
    }
    return db.transaction(async (tx) => {
      const now = Date.now();
      const waiting = [...this.failing].filter(([, f]) => f.until > now).map(([, f]) => f.target);
      const pending = await takePendingExports(tx, BATCH, waiting);
      if (!pending?.length) return 0;
      const byFile = new Map<string, PendingExport[]>();
      for (const c of pending) {
        const file = captionFileOf(path.posix.dirname(c.imagePath), c.perspective);
        const captions = byFile.get(file);
        if (captions) captions.push(c);
        else byFile.set(file, [c]);
      }
      const done: { id: string; key: string }[] = [];
      const files: { path: string; sizeBytes: number; mtime: Date }[] = [];
      for (const [file, captions] of byFile) {
        const written = await this.writeFile(file, captions);
        if (!written) continue;
        files.push(written.file);
        done.push(...written.keys);
      }
      await markExported(tx, done);
      // Written by us: the import need not read them again.
      await recordCaptionFiles(tx, files);
      return pending.length;
    });
  }

  /** Writes one file's captions; undefined (the captions keep waiting) when it fails or waits for a retry. */
  private async writeFile(file: string, captions: readonly PendingExport[]) {
    const { root, logger, written } = this.options;
    const failing = this.failing.get(file);
    if (failing && failing.until > Date.now()) return undefined;
    const folder = path.posix.dirname(captions[0]!.imagePath);
    const perspective = captions[0]!.perspective;
    const lines = captions.map((c) => {
      const entry = { filename: path.posix.basename(c.imagePath), configName: c.perspective, version: c.version, model: c.model, provider: c.provider, parsed: c.result };
      return { id: c.id, key: captionKey(c.imagePath, c.perspective, entry), filename: entry.filename, line: formatCaptionLine(entry) };
    });
    try {
      const outcome = await writeCaptionLines(path.join(root, file), folder, perspective, lines, this.indexes);
      this.failing.delete(file);
      written?.inc({ outcome: 'written' }, outcome.written);
      if (outcome.repaired) logger.warn({ file }, 'a line cut short in a captions file was dropped and written again');
      return { file: { path: file, sizeBytes: outcome.sizeBytes, mtime: outcome.mtime }, keys: lines.map(({ id, key }) => ({ id, key })) };
    } catch (error) {
      const failures = (failing?.failures ?? 0) + 1;
      const waitMs = Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** (failures - 1));
      this.failing.set(file, { until: Date.now() + waitMs, failures, target: { folder, perspective } });
      written?.inc({ outcome: 'failed' }, captions.length);
      logger.warn({ file, captions: captions.length, retryInMs: waitMs, error: (error as NodeJS.ErrnoException).code ?? (error as Error).message }, 'could not write captions back to the workspace; will retry');
      return undefined;
    }
  }
}

async function writable(folder: string): Promise<boolean> {
  return access(folder, constants.W_OK).then(
    () => true,
    () => false,
  );
}
