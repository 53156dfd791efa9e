/**
 * graphcap's dataset layout (its Media Server's): the images loose in `datasets/` are the dataset
 * `default`; `datasets/<name>/**` (every subfolder, at any depth) is the dataset `<name>`;
 * `datasets/local/<name>/**` is the dataset `<name>` too. `analysis/` folders hold results, never
 * images, and hidden folders are skipped. Names only: a 100,000-file folder costs its names, and
 * statImageFile (src/workspace/files.ts) says which are image files.
 */
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { InvalidInputError } from '../errors.js';
import { isImageName } from './files.js';
import { notFoundAsEmpty } from './paths.js';

/** The dataset of the images loose in `datasets/`. */
export const DEFAULT_DATASET = 'default';
/** `datasets/local/<name>/` is the dataset `<name>` (graphcap studio creates datasets there). */
const LOCAL = 'local';
/** Where a graphcap pipeline writes its results beside the images: never images. */
export const ANALYSIS = 'analysis';

const DATASET_NAME = /^[\w][\w .@+-]{0,127}$/;

export function isValidDatasetName(name: string): boolean {
  return DATASET_NAME.test(name) && name !== '.' && name !== '..';
}

/** A place a dataset's files lie: everything under `prefix`, or only its direct files. */
export interface DatasetSource {
  /** Workspace-relative, ending in a slash. */
  prefix: string;
  recursive: boolean;
}

/** Every place the dataset `name`'s files may lie by the layout. */
export function datasetSources(name: string): DatasetSource[] {
  const sources: DatasetSource[] = [{ prefix: `datasets/${LOCAL}/${name}/`, recursive: true }];
  // datasets/local/ itself is no dataset: its folders are.
  if (name !== LOCAL) sources.unshift({ prefix: `datasets/${name}/`, recursive: true });
  if (name === DEFAULT_DATASET) sources.push({ prefix: 'datasets/', recursive: false });
  return sources;
}

/** The dataset a workspace-relative image path belongs to by the layout, if any. */
export function datasetOfPath(relative: string): string | undefined {
  const parts = relative.split('/');
  if (parts[0] !== 'datasets' || parts.length < 2 || !isImageName(relative)) return undefined;
  if (parts.length === 2) return DEFAULT_DATASET;
  const [name, folders] = parts[1] === LOCAL ? [parts[2], parts.slice(3, -1)] : [parts[1], parts.slice(2, -1)];
  if (!name || (parts[1] === LOCAL && parts.length < 4) || !isValidDatasetName(name)) return undefined;
  if (folders.some((f) => f === ANALYSIS || f.startsWith('.'))) return undefined;
  return name;
}

const folderNames = async (folder: string) =>
  (await readdir(folder, { withFileTypes: true }).catch(notFoundAsEmpty))
    .filter((e) => e.isDirectory() && isValidDatasetName(e.name))
    .map((e) => e.name);

/** The datasets on disk: `default` when images lie loose in `datasets/`, each `datasets/<name>/` and `datasets/local/<name>/`. */
export async function listDatasetNames(root: string): Promise<string[]> {
  const datasets = path.join(root, 'datasets');
  const entries = await readdir(datasets, { withFileTypes: true }).catch(notFoundAsEmpty);
  const names = new Set(entries.filter((e) => e.isDirectory() && e.name !== LOCAL && isValidDatasetName(e.name)).map((e) => e.name));
  for (const name of await folderNames(path.join(datasets, LOCAL))) names.add(name);
  if (entries.some((e) => !e.isDirectory() && isImageName(e.name))) names.add(DEFAULT_DATASET);
  return [...names].sort();
}

/** Whether a folder feeds the dataset `name` (it then follows its folders, and cannot be renamed through the API). */
export async function datasetFolderExists(root: string, name: string): Promise<boolean> {
  if (!isValidDatasetName(name)) return false;
  if (name === DEFAULT_DATASET && (await listDatasetNames(root)).includes(DEFAULT_DATASET)) return true;
  const isFolder = (p: string) => stat(path.join(root, p)).then((s) => s.isDirectory(), () => false);
  return (await isFolder(`datasets/${name}`)) || (await isFolder(`datasets/${LOCAL}/${name}`));
}

/** File names in locale order (the order of the import's reports); a collator, not localeCompare per pair. */
const byName = new Intl.Collator().compare;

/** The candidate image paths of a dataset, and the folders they were found in (the watcher's to watch). */
export interface DatasetListing {
  paths: string[];
  folders: string[];
  /** Folders that exist but could not be read (what they hold is unknown), with the error code. */
  unreadable: { folder: string; code: string }[];
  /** One of the dataset's own folders is there but holds nothing at all (as an unmounted volume's mount point). */
  emptyFolder: boolean;
}

/**
 * The candidate image paths of the dataset `name` (by extension, under all its sources, in locale
 * order), and the folders walked. A folder that is not there is empty; one that cannot be read is
 * listed as unreadable (a scan must not take it for empty and drop its members). Symlinked folders
 * are not followed; a symlinked file is a candidate, for statImageFile to check where it leads.
 */
export async function listDatasetImagePaths(root: string, name: string): Promise<DatasetListing> {
  if (!isValidDatasetName(name)) throw new InvalidInputError(`invalid dataset name ${JSON.stringify(name)}`);
  const paths: string[] = [];
  const folders: string[] = [];
  const unreadable: DatasetListing['unreadable'] = [];
  let emptyFolder = false;
  for (const source of datasetSources(name)) {
    const top = source.prefix.slice(0, -1);
    const pending = [top];
    for (let folder = pending.pop(); folder !== undefined; folder = pending.pop()) {
      const entries = await readdir(path.join(root, folder), { withFileTypes: true }).then(
        (list) => {
          if (folder === top && list.length === 0) emptyFolder = true;
          return list;
        },
        (error: NodeJS.ErrnoException) => {
          if (error.code !== 'ENOENT' && error.code !== 'ENOTDIR') unreadable.push({ folder: folder!, code: error.code ?? 'error' });
          return [];
        },
      );
      if (entries.length > 0 || folder === top) folders.push(folder);
      const files: string[] = [];
      for (const entry of entries) {
        if (entry.isDirectory()) {
          if (source.recursive && entry.name !== ANALYSIS && !entry.name.startsWith('.')) pending.push(`${folder}/${entry.name}`);
        } else if (isImageName(entry.name)) {
          files.push(entry.name);
        }
      }
      for (const file of files.sort(byName)) paths.push(`${folder}/${file}`);
    }
  }
  return { paths: [...new Set(paths)].sort(byName), folders, unreadable, emptyFolder };
}
