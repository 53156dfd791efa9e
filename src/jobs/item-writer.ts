/**
 * The item writer, run by every replica: writes the items a create left in job_item_chunks (the
 * SQL is in src/db/item-chunks.ts), one chunk per transaction, until none is left. A create in
 * this process wakes it at once; the poll finds what another replica's create left, or what a
 * crash interrupted (a chunk is written and deleted in one transaction, so nothing is lost or
 * written twice).
 */
import type { Db } from '../db/client.js';
import { writeNextChunk } from '../db/item-chunks.js';
import type { Logger } from '../logger.js';
import { Wakeup } from './wakeup.js';

export interface ItemWriterOptions {
  db: Db;
  logger: Logger;
  pollMs: number;
}

export class ItemWriter {
  private readonly wakeup = new Wakeup();
  private readonly logger: Logger;
  private stopped = false;
  private loop: Promise<void> | undefined;

  constructor(private readonly options: ItemWriterOptions) {
    this.logger = options.logger.child({ component: 'item-writer' });
  }

  start(): void {
    this.loop ??= this.run();
  }

  /** There may be chunks to write (a create left some). */
  wake(): void {
    this.wakeup.wake();
  }

  /** Ends after the chunk in progress, if any; what is left stays for the next start or another replica. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.wakeup.wake();
    await this.loop;
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      try {
        let items = 0;
        for (let n; !this.stopped && (n = await writeNextChunk(this.options.db)) > 0; ) items += n;
        if (items > 0) this.logger.debug({ items }, 'wrote queued items');
      } catch (error) {
        this.logger.error({ err: error }, 'writing queued items failed; trying again after the poll interval');
      }
      await this.wakeup.wait(this.options.pollMs);
    }
  }
}
