/** Datasets and their membership. */
import { and, eq, inArray, sql } from 'drizzle-orm';
import type { Db } from './client.js';
import { datasetImages, datasets, images } from './schema.js';

/** Returns the dataset's id, creating it when new. */
export async function ensureDataset(db: Db, name: string): Promise<string> {
  const [row] = await db
    .insert(datasets)
    .values({ name })
    .onConflictDoUpdate({ target: datasets.name, set: { name: sql`excluded.name` } })
    .returning({ id: datasets.id });
  return row!.id;
}

export async function findDataset(db: Db, by: { id?: string; name?: string }) {
  const where = by.id ? eq(datasets.id, by.id) : eq(datasets.name, by.name ?? '');
  const [row] = await db.select({ id: datasets.id, name: datasets.name }).from(datasets).where(where);
  return row;
}

/** The dataset's members as (imageId, path). */
export async function listDatasetMembers(db: Db, datasetId: string) {
  return db
    .select({ imageId: images.id, path: images.path })
    .from(datasetImages)
    .innerJoin(images, eq(images.id, datasetImages.imageId))
    .where(eq(datasetImages.datasetId, datasetId));
}

export async function addDatasetMembers(db: Db, datasetId: string, imageIds: string[]): Promise<void> {
  if (imageIds.length === 0) return;
  await db
    .insert(datasetImages)
    .values(imageIds.map((imageId) => ({ datasetId, imageId })))
    .onConflictDoNothing();
}

export async function removeDatasetMembers(db: Db, datasetId: string, imageIds: string[]): Promise<void> {
  if (imageIds.length === 0) return;
  await db
    .delete(datasetImages)
    .where(and(eq(datasetImages.datasetId, datasetId), inArray(datasetImages.imageId, imageIds)));
}
