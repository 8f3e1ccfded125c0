/**
 * Where benchmark data lives: a data directory (`--data <dir>` or `DIKE_DATA`) with one folder per
 * dataset. Every dataset declares its files with canonical download URLs and SHA-256s (in its
 * benchmark file); a missing file is one line that says what, where, and where to get it.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { DikeError } from '../errors.js';
import { sha256File } from '../util/hash.js';
import type { DataFile, DataFileRecord, Dataset } from './types.js';
import { embeddedDataDir } from '../embedded.js';

export const DATA_ENV = 'DIKE_DATA';

/**
 * The data directory: the explicit option, else $DIKE_DATA, else (when `embedded` is allowed) the
 * data shipped with Dikē, which holds CrowS-Pairs only; other benchmarks then fail with the one-line
 * "missing … run `dike data fetch`" error.
 */
export function resolveDataDir(explicit?: string, opts: { embedded?: boolean } = {}): string {
  const dir = explicit ?? process.env[DATA_ENV];
  if (dir === undefined || dir === '') {
    if (opts.embedded) return embeddedDataDir();
    throw new DikeError('', '--data', `no data directory: pass --data <dir> or set ${DATA_ENV} (fetch data with \`dike data fetch <name> --data <dir>\`)`);
  }
  if (!existsSync(dir)) throw new DikeError(dir, '', `data directory not found (set with --data or ${DATA_ENV})`);
  return dir;
}

export function dataFilePath(dataDir: string, ds: Dataset, f: DataFile): string {
  return path.join(dataDir, ds.folder, f.path);
}

/** Path of a dataset file, or a one-line error naming what is missing, where, and where to get it. */
export function requireDataFile(dataDir: string, ds: Dataset, relPath: string): string {
  const f = ds.files.find((x) => x.path === relPath);
  if (f === undefined) throw new Error(`dataset ${ds.name} declares no file ${relPath}`);
  const p = dataFilePath(dataDir, ds, f);
  if (!existsSync(p)) {
    throw new DikeError(p, '', `missing ${ds.name} data file; run \`dike data fetch ${ds.name} --data ${dataDir}\` or download ${f.url}`);
  }
  return p;
}

/** Checksum records for the files a run read (relative to the data directory). */
export function dataRecords(dataDir: string, files: readonly string[]): DataFileRecord[] {
  return files.map((p) => ({ file: path.relative(dataDir, p), sha256: sha256File(p) }));
}

/** Read a UTF-8 text file that requireDataFile has located. */
export function readText(p: string): string {
  try {
    return readFileSync(p, 'utf8');
  } catch (e) {
    throw new DikeError(p, '', `cannot read: ${(e as Error).message}`);
  }
}
