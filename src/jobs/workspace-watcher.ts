/**
 * The workspace kept in step with its files: every import goes through here, one at a time (the
 * start-up import, POST /api/workspace/sync, the periodic rescan, the watcher's changes, a job
 * naming a file just copied in). The watcher watches `datasets/`, `datasets/local/` and every folder
 * of a dataset, each with one non-recursive watch (inotify: memory per folder, not per file), and
 * brings the paths its events name up to date a moment later (src/workspace/sync.ts syncPaths): a
 * file copied into a dataset folder is listed within a second or so, a removed one leaves its
 * dataset. Where watching is not possible (no inotify watches left, a network mount), the periodic
 * rescan (WORKSPACE_RESCAN_SECONDS) is what catches changes.
 */
import { watch, type FSWatcher } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Db } from '../db/client.js';
import type { Logger } from '../logger.js';
import { isImageName, type WorkspaceLimits } from '../workspace/files.js';
import { ANALYSIS } from '../workspace/layout.js';
import { syncPaths, syncWorkspace, type SyncReport } from '../workspace/sync.js';

/** Events are gathered this long before their paths are synced: a copy of many files is one batch. */
const SETTLE_MS = 300;

export interface WorkspaceWatcherOptions {
  db: Db;
  root: string;
  logger: Logger;
  /** Watch the dataset folders (WORKSPACE_WATCH). */
  watch: boolean;
  /** Milliseconds between full imports; 0 = none. */
  rescanMs: number;
  /** How big a file the import reads (the settings' defaults when absent). */
  limits?: WorkspaceLimits;
}

export class WorkspaceWatcher {
  private queue: Promise<unknown> = Promise.resolve();
  private waitingSync: Promise<SyncReport> | undefined;
  private readonly watchers = new Map<string, FSWatcher>();
  private readonly changed = new Set<string>();
  private settleTimer: NodeJS.Timeout | undefined;
  private rescanTimer: NodeJS.Timeout | undefined;
  private watching: boolean;
  private stopped = false;

  constructor(private readonly options: WorkspaceWatcherOptions) {
    this.watching = options.watch;
  }

  /**
   * A full import (one at a time with every other), then the watches it needs. Callers that come
   * while one waits to start share it: a burst of sync requests is one sync after the running one,
   * not a queue of them.
   */
  sync(): Promise<SyncReport> {
    this.waitingSync ??= this.serialize(async () => {
      this.waitingSync = undefined;
      const report = await syncWorkspace(this.options.db, this.options.root, this.options.logger, this.options.limits);
      this.watchFolders(['datasets', 'datasets/local', ...report.datasets.flatMap((d) => d.folders)]);
      return report;
    });
    return this.waitingSync;
  }

  /** Brings these workspace-relative paths up to date now (one at a time with every other import). */
  register(paths: readonly string[]): ReturnType<typeof syncPaths> {
    return this.serialize(() => syncPaths(this.options.db, this.options.root, paths, this.options.limits));
  }

  /** The periodic rescan; the watches come with the first sync. */
  start(): void {
    if (this.options.rescanMs > 0) this.scheduleRescan();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.settleTimer);
    clearTimeout(this.rescanTimer);
    for (const watcher of this.watchers.values()) watcher.close();
    this.watchers.clear();
    await this.queue;
  }

  /** Folders watched now (for health and tests). */
  get watchedFolders(): number {
    return this.watchers.size;
  }

  private serialize<T>(work: () => Promise<T>): Promise<T> {
    const run = this.queue.then(work, work);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private scheduleRescan(): void {
    this.rescanTimer = setTimeout(() => {
      void this.sync()
        .catch((error: unknown) => this.options.logger.error({ err: error }, 'workspace rescan failed'))
        .finally(() => !this.stopped && this.scheduleRescan());
    }, this.options.rescanMs);
    this.rescanTimer.unref();
  }

  private watchFolders(folders: readonly string[]): void {
    for (const folder of folders) this.watchFolder(folder);
  }

  private watchFolder(folder: string): void {
    if (!this.watching || this.stopped || this.watchers.has(folder)) return;
    let watcher: FSWatcher;
    try {
      watcher = watch(path.join(this.options.root, folder), { persistent: false }, (_event, name) => this.changedIn(folder, name));
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return;
      this.giveUpWatching(code ?? String(error));
      return;
    }
    watcher.on('error', () => {
      watcher.close();
      this.watchers.delete(folder);
    });
    this.watchers.set(folder, watcher);
  }

  private giveUpWatching(why: string): void {
    this.watching = false;
    for (const watcher of this.watchers.values()) watcher.close();
    this.watchers.clear();
    this.options.logger.warn(
      { reason: why, rescanSeconds: this.options.rescanMs / 1000 },
      'cannot watch the workspace folders: new files are seen by the periodic rescan only',
    );
  }

  private changedIn(folder: string, name: string | Buffer | null): void {
    if (!name) return;
    const entry = String(name);
    if (entry === ANALYSIS || entry.startsWith('.')) return;
    this.changed.add(`${folder}/${entry}`);
    clearTimeout(this.settleTimer);
    this.settleTimer = setTimeout(() => void this.settle(), SETTLE_MS);
  }

  /** The paths events named: new folders are watched and their files taken in; files are synced. */
  private async settle(): Promise<void> {
    const paths = [...this.changed];
    this.changed.clear();
    const files: string[] = [];
    for (const p of paths) {
      const info = await stat(path.join(this.options.root, p)).catch(() => undefined);
      if (info?.isDirectory()) await this.newFolder(p, files);
      else if (isImageName(p)) files.push(p);
    }
    if (files.length === 0) return;
    try {
      const { added, removed } = await this.register(files);
      if (added.length + removed.length > 0) this.options.logger.info({ added: added.length, removed: removed.length }, 'workspace files changed');
    } catch (error) {
      this.options.logger.error({ err: error }, 'could not take in changed workspace files');
    }
  }

  /** A folder that appeared: a new dataset (whole import of it), or a subfolder of one (its files). */
  private async newFolder(folder: string, files: string[]): Promise<void> {
    const parent = path.posix.dirname(folder);
    if (folder === 'datasets/local' || parent === 'datasets' || parent === 'datasets/local') {
      // A new dataset (or the folder of local ones): a whole import, which watches its folders.
      this.watchFolder(folder);
      await this.sync().catch((error: unknown) => this.options.logger.error({ err: error }, 'could not import a new dataset folder'));
      return;
    }
    this.watchFolder(folder);
    const entries = await readdir(path.join(this.options.root, folder), { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      if (e.isDirectory() && e.name !== ANALYSIS && !e.name.startsWith('.')) await this.newFolder(`${folder}/${e.name}`, files);
      else if (isImageName(e.name)) files.push(`${folder}/${e.name}`);
    }
  }
}
