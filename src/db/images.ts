/** Images: registered files of the workspace, looked up by their relative path. */
import { inArray, sql } from 'drizzle-orm';
import type { Db } from './client.js';
import { images } from './schema.js';

export interface ImageUpsert {
  path: string;
  sizeBytes: number;
  fileMtime: Date;
  format: string | null;
  width: number | null;
  height: number | null;
  contentHash: string;
}

export async function findImagesByPath(db: Db, paths: string[]) {
  if (paths.length === 0) return [];
  return db
    .select({
      id: images.id,
      path: images.path,
      sizeBytes: images.sizeBytes,
      fileMtime: images.fileMtime,
      contentHash: images.contentHash,
    })
    .from(images)
    .where(inArray(images.path, paths));
}

/** Inserts or refreshes an image by path; returns its id. */
export async function upsertImage(db: Db, image: ImageUpsert): Promise<string> {
  const { path: _path, ...changes } = image;
  const [row] = await db
    .insert(images)
    .values(image)
    .onConflictDoUpdate({ target: images.path, set: { ...changes, updatedAt: sql`now()` } })
    .returning({ id: images.id });
  return row!.id;
}
