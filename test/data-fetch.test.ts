/**
 * `dike data fetch` against a local HTTP server on loopback that serves ../shared/data with the
 * same layout as the canonical sources: files arrive, are verified, and bad downloads never land.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync, mkdirSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fetchDataset, gitBlobId } from '../src/measure/fetch.js';
import { CROWS_DATASET } from '../src/measure/crows-pairs.js';
import { DikeError } from '../src/errors.js';
import { DATA, CLI } from './fixtures.js';
import type { Dataset } from '../src/measure/types.js';

const run = promisify(execFile);

let server: Server;
let mirror: string;
const requests: string[] = [];

before(async () => {
  server = createServer((req, res) => {
    const url = decodeURIComponent((req.url ?? '/').split('?')[0]!);
    requests.push(url);
    if (url.startsWith('/tampered/')) {
      res.writeHead(200).end('not the file you were looking for');
      return;
    }
    const p = path.resolve(DATA, '.' + url);
    if (!p.startsWith(DATA + path.sep) || !existsSync(p)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200).end(readFileSync(p));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw new Error('no address');
  mirror = `http://127.0.0.1:${addr.port}`;
});
after(() => new Promise<void>((resolve) => server.close(() => resolve())));

describe('dike data fetch', () => {
  it('downloads CrowS-Pairs through the CLI and verifies its SHA-256', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dike-fetch-'));
    const { stdout } = await run(process.execPath, [CLI, 'data', 'fetch', 'crows-pairs', '--data', dir, '--mirror', mirror]);
    assert.match(stdout, /downloaded .* verified/);
    const got = readFileSync(path.join(dir, 'crows-pairs', 'crows_pairs_anonymized.csv'));
    assert.equal(createHash('sha256').update(got).digest('hex'), CROWS_DATASET.files[0]!.sha256);
    assert.ok(requests.includes('/crows-pairs/crows_pairs_anonymized.csv'));
    // A second fetch finds the verified file and downloads nothing.
    const before = requests.length;
    const again = await run(process.execPath, [CLI, 'data', 'fetch', 'crows-pairs', '--data', dir, '--mirror', mirror]);
    assert.match(again.stdout, /present, verified/);
    assert.equal(requests.length, before);
  });

  it('rejects a download whose checksum does not match and leaves no file', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dike-fetch-'));
    const ds: Dataset = { ...CROWS_DATASET, folder: 'tampered' };
    await assert.rejects(fetchDataset(ds, { dataDir: dir, mirror }), (e: unknown) => {
      assert.ok(e instanceof DikeError);
      assert.match(e.message, /SHA-256 .* does not match/);
      return true;
    });
    assert.deepEqual(readdirSync(path.join(dir, 'tampered')), []);
  });

  it('reports an HTTP error with the URL', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dike-fetch-'));
    const ds: Dataset = { ...CROWS_DATASET, folder: 'nowhere' };
    await assert.rejects(fetchDataset(ds, { dataDir: dir, mirror }), /\/nowhere\/crows_pairs_anonymized\.csv: download failed: HTTP 404/);
  });

  it('refuses to overwrite a present file that fails verification unless forced', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dike-fetch-'));
    mkdirSync(path.join(dir, 'crows-pairs'));
    const dest = path.join(dir, 'crows-pairs', 'crows_pairs_anonymized.csv');
    writeFileSync(dest, 'edited');
    await assert.rejects(fetchDataset(CROWS_DATASET, { dataDir: dir, mirror }), /already present .* --force/);
    assert.equal(readFileSync(dest, 'utf8'), 'edited');
    const out = await fetchDataset(CROWS_DATASET, { dataDir: dir, mirror, force: true });
    assert.equal(out[0]!.status, 'downloaded');
  });

  it('verifies by git blob id when no SHA-256 is recorded', () => {
    // `git hash-object` of the CrowS-Pairs CSV, recorded in data/crows-pairs/SOURCE.md.
    const csv = readFileSync(path.join(DATA, 'crows-pairs', 'crows_pairs_anonymized.csv'));
    assert.equal(gitBlobId(csv), '28fa7d906a83d441001fb2a0eeae28c6d64a99e1');
    // Git's empty blob, as `git hash-object /dev/null` prints it.
    assert.equal(gitBlobId(new Uint8Array(0)), 'e69de29bb2d1d6434b8b29ae775ad8c2e48c5391');
  });
});
