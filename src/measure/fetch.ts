/**
 * `dike data fetch <name>`: download a dataset's files from their canonical URLs (or a mirror with
 * the same folder layout), verify each against its recorded SHA-256 (or git blob id), and write it
 * atomically into the data directory. A file that fails verification is never left behind.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { DikeError } from '../errors.js';
import { sha256Bytes } from '../util/hash.js';
import type { DataFile, Dataset } from './types.js';

export function gitBlobId(bytes: Uint8Array): string {
  return createHash('sha1').update(`blob ${bytes.byteLength}\0`).update(bytes).digest('hex');
}

/** Check bytes against the recorded checksum; returns the problem, or undefined when they match. */
export function verify(f: DataFile, bytes: Uint8Array): string | undefined {
  if (f.sha256 !== '') {
    const got = sha256Bytes(bytes);
    return got === f.sha256 ? undefined : `SHA-256 ${got} does not match the recorded ${f.sha256}`;
  }
  if (f.gitBlob !== undefined) {
    const got = gitBlobId(bytes);
    return got === f.gitBlob ? undefined : `git blob id ${got} does not match the recorded ${f.gitBlob}`;
  }
  return 'no checksum is recorded for this file, so it cannot be verified';
}

export interface FetchOptions {
  dataDir: string;
  /** Base URL with the same layout as the data directory (<mirror>/<folder>/<file>). */
  mirror?: string;
  /** Re-download files that are present but fail verification. */
  force?: boolean;
  log?: (line: string) => void;
}

export interface FetchOutcome {
  file: string;
  status: 'downloaded' | 'present';
}

export function urlFor(ds: Dataset, f: DataFile, mirror?: string): string {
  return mirror === undefined ? f.url : `${mirror.replace(/\/+$/, '')}/${ds.folder}/${f.path}`;
}

export async function fetchDataset(ds: Dataset, opts: FetchOptions): Promise<FetchOutcome[]> {
  const folder = path.join(opts.dataDir, ds.folder);
  mkdirSync(folder, { recursive: true });
  const outcomes: FetchOutcome[] = [];
  for (const f of ds.files) {
    const dest = path.join(folder, f.path);
    if (existsSync(dest)) {
      const problem = verify(f, readFileSync(dest));
      if (problem === undefined) {
        outcomes.push({ file: dest, status: 'present' });
        opts.log?.(`${dest}: present, verified`);
        continue;
      }
      if (!opts.force) throw new DikeError(dest, '', `already present but ${problem}; rerun with --force to replace it`);
    }
    const url = urlFor(ds, f, opts.mirror);
    let bytes: Uint8Array;
    try {
      const res = await fetch(url);
      if (!res.ok) throw new DikeError(url, '', `download failed: HTTP ${res.status} ${res.statusText}`);
      bytes = new Uint8Array(await res.arrayBuffer());
    } catch (e) {
      if (e instanceof DikeError) throw e;
      throw new DikeError(url, '', `download failed: ${(e as Error).message}${(e as { cause?: Error }).cause ? ` (${(e as { cause?: Error }).cause!.message})` : ''}`);
    }
    const problem = verify(f, bytes);
    if (problem !== undefined) throw new DikeError(url, '', `downloaded file rejected: ${problem}`);
    const tmp = `${dest}.part-${process.pid}`;
    try {
      mkdirSync(path.dirname(dest), { recursive: true });
      writeFileSync(tmp, bytes);
      renameSync(tmp, dest);
    } catch (e) {
      rmSync(tmp, { force: true });
      throw new DikeError(dest, '', `cannot write: ${(e as Error).message}`);
    }
    outcomes.push({ file: dest, status: 'downloaded' });
    opts.log?.(`${dest}: downloaded from ${url}, verified`);
  }
  return outcomes;
}
