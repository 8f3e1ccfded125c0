import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import Database from 'better-sqlite3';
import { DikeError } from '../src/errors.js';
import type { BenchmarkResult, Dataset } from '../src/measure/types.js';
import {
  canonicalJson,
  hashDatasetFiles,
  hashModelDir,
  modelKey,
  openStore,
  runKey,
  SCHEMA_VERSION,
  storePath,
  type ModelInput,
  type RunInput,
} from '../src/audit/store.js';

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'dike-store-'));
}

/**
 * A deterministic benchmark result with `n` items. Self-contained (no imports, no closures) so that
 * the crash test's child process can be given its source text.
 */
function makeResult(benchmark: string, n: number, salt: number): BenchmarkResult {
  let s = (salt * 2654435761) >>> 0;
  const rand = (): number => {
    // mulberry32
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const groups = ['gender', 'race-color', 'religion', 'age'];
  const special = [-0, NaN, Infinity, -Infinity, 5e-324, Number.MAX_VALUE, 0.1 + 0.2, 2 ** 53 + 2, 3];
  const items: BenchmarkResult['items'] = [];
  for (let i = 0; i < n; i++) {
    const score = i < special.length ? special[i]! : (rand() - 0.5) * Math.exp(20 * (rand() - 0.5));
    const item: BenchmarkResult['items'][number] = { id: `${benchmark}-${i}`, group: groups[i % groups.length]!, score };
    if (i % 5 !== 4) item.outcome = i % 5 === 3 ? null : rand() < 0.5 ? 0 : 1;
    if (i % 3 !== 2) item.detail = { ll_more: rand() * -40, ll_less: -rand() * 40, n_tokens: (i % 17) + 1, direction: i % 2 ? 'stereo' : 'antistereo', neutral: i % 7 === 0, note: null, odd: i === 1 ? NaN : i === 2 ? -0 : 1 / 3 };
    items.push(item);
  }
  const ci = (x: number): { score: number; ci95: [number, number]; n: number } => ({ score: x, ci95: [x - 1.25, x + 1.25], n });
  return {
    score: 100 * rand(),
    ci95: [rand(), 100 - rand()],
    n,
    benchmark,
    scorer: 'pll',
    metric: '% pairs preferring the more stereotypical sentence',
    groups: Object.fromEntries(groups.map((g) => [g, ci(rand() * 100)])),
    extra: { neutral: 3, bias_score: NaN, lms: ci(0.1 + 0.2), negzero: -0 },
    items,
    data: [{ file: 'crows-pairs/crows_pairs_anonymized.csv', sha256: 'ab'.repeat(32) }],
    seed: 1234,
    resamples: 1000,
  };
}

const DENSE: ModelInput = {
  role: 'dense',
  name: 'bert-tiny',
  dir: '/models/bert-tiny',
  weightsSha256: '11'.repeat(32),
  filesSha256: '22'.repeat(32),
  recipe: null,
};
const RECIPE = { seed: 0, steps: [{ method: 'magnitude', options: { sparsity: 0.5 }, scope: { modules: ['attention', 'ffn'] }, overrides: [] }] };
const VARIANT: ModelInput = { ...DENSE, role: 'variant', name: 'magnitude-0.5', dir: '/out/magnitude-0.5', weightsSha256: '33'.repeat(32), recipe: RECIPE };

const RUN: RunInput = {
  modelKey: modelKey(DENSE),
  benchmark: 'crows-pairs',
  scorer: 'pll',
  dataSha256: 'dd'.repeat(32),
  options: { seed: 1234, resamples: 1000, limit: undefined, mode: 'fp32' },
  toolVersion: '0.1.0',
};

describe('keys', () => {
  test('same inputs give the same key; option order and undefined members do not matter', () => {
    assert.equal(runKey(RUN), runKey({ ...RUN }));
    assert.equal(runKey(RUN), runKey({ ...RUN, options: { mode: 'fp32', resamples: 1000, seed: 1234 } }));
    assert.equal(modelKey(DENSE), modelKey({ ...DENSE, name: 'renamed', dir: '/elsewhere' } as ModelInput));
    assert.match(runKey(RUN), /^[0-9a-f]{64}$/);
  });

  test('every input changes the key', () => {
    const base = runKey(RUN);
    const changed: RunInput[] = [
      { ...RUN, dataSha256: 'de'.repeat(32) },
      { ...RUN, modelKey: modelKey(VARIANT) },
      { ...RUN, benchmark: 'stereoset' },
      { ...RUN, scorer: 'logprob' },
      { ...RUN, toolVersion: '0.1.1' },
      { ...RUN, options: { ...RUN.options, seed: 1235 } },
      { ...RUN, options: { ...RUN.options, resamples: 2000 } },
      { ...RUN, options: { ...RUN.options, limit: 10 } },
      { ...RUN, options: { ...RUN.options, mode: 'int8-kernels' } },
      { ...RUN, options: { ...RUN.options, threads: 4 } },
    ];
    const keys = new Set(changed.map(runKey));
    assert.equal(keys.size, changed.length);
    assert.ok(!keys.has(base));
  });

  test('model key depends on weights, other files, recipe and role; not on name or dir', () => {
    const keys = [
      modelKey(VARIANT),
      modelKey({ ...VARIANT, weightsSha256: '44'.repeat(32) }),
      modelKey({ ...VARIANT, filesSha256: '55'.repeat(32) }),
      modelKey({ ...VARIANT, recipe: { ...RECIPE, seed: 1 } }),
      modelKey({ ...VARIANT, recipe: null }),
      modelKey({ ...VARIANT, role: 'dense' }),
    ];
    assert.equal(new Set(keys).size, keys.length);
  });

  test('canonical JSON refuses what it cannot hash faithfully', () => {
    assert.equal(canonicalJson({ b: 1, a: [1, { d: 2, c: undefined }] }), '{"a":[1,{"d":2}],"b":1}');
    assert.throws(() => canonicalJson({ x: NaN }), DikeError);
    assert.throws(() => canonicalJson({ x: new Float32Array(2) }), DikeError);
    assert.throws(() => runKey({ ...RUN, options: { ...RUN.options, seed: Infinity } }), DikeError);
  });

  test('hashModelDir: weights hash is the file hash; config and tokenizer change files hash', () => {
    const dir = tmpDir();
    const weights = Buffer.from('not really safetensors, but hashed as bytes');
    fs.writeFileSync(path.join(dir, 'model.safetensors'), weights);
    fs.writeFileSync(path.join(dir, 'config.json'), '{"model_type":"bert"}');
    fs.writeFileSync(path.join(dir, 'README.md'), 'labels only');
    const a = hashModelDir(dir);
    assert.equal(a.weightsSha256, createHash('sha256').update(weights).digest('hex'));
    fs.writeFileSync(path.join(dir, 'README.md'), 'changed label');
    assert.deepEqual(hashModelDir(dir), a);
    fs.writeFileSync(path.join(dir, 'config.json'), '{"model_type":"bert","layer_norm_eps":1e-5}');
    const b = hashModelDir(dir);
    assert.equal(b.weightsSha256, a.weightsSha256);
    assert.notEqual(b.filesSha256, a.filesSha256);
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), '{}');
    assert.notEqual(hashModelDir(dir).filesSha256, b.filesSha256);
    fs.writeFileSync(path.join(dir, 'model.safetensors'), Buffer.concat([weights, Buffer.from([0])]));
    assert.notEqual(hashModelDir(dir).weightsSha256, a.weightsSha256);
  });

  test('hashDatasetFiles: a changed or added data file changes the hash', () => {
    const dataDir = tmpDir();
    const ds: Dataset = {
      name: 'toy',
      folder: 'toy',
      license: '',
      citation: '',
      homepage: '',
      files: [
        { path: 'a.csv', url: '', sha256: '', bytes: 0 },
        { path: 'sub/b.json', url: '', sha256: '', bytes: 0 },
      ],
    };
    fs.mkdirSync(path.join(dataDir, 'toy', 'sub'), { recursive: true });
    fs.writeFileSync(path.join(dataDir, 'toy', 'a.csv'), 'x,y\n1,2\n');
    const absent = hashDatasetFiles(dataDir, ds);
    fs.writeFileSync(path.join(dataDir, 'toy', 'sub', 'b.json'), '[]');
    const h1 = hashDatasetFiles(dataDir, ds);
    assert.notEqual(h1, absent);
    assert.equal(hashDatasetFiles(dataDir, ds), h1);
    fs.writeFileSync(path.join(dataDir, 'toy', 'a.csv'), 'x,y\n1,3\n');
    assert.notEqual(hashDatasetFiles(dataDir, ds), h1);
  });
});

describe('store', () => {
  test('a finished run round-trips exactly: floats bit for bit, null and absent outcomes, NaN in results', () => {
    const dir = tmpDir();
    const file = storePath(dir);
    const want = makeResult('crows-pairs', 500, 1);
    let store = openStore(file);
    const model = store.upsertModel(DENSE);
    const run = store.beginRun({ ...RUN, modelId: model.id });
    assert.equal(run.key, runKey(RUN));
    assert.equal(run.restarted, false);
    assert.equal(store.findRun(run.key), undefined, 'a running run is not reported');
    store.finishRun(run.id, want);
    store.close();

    store = openStore(file);
    const got = store.findRun(runKey(RUN));
    assert.ok(got !== undefined);
    assert.equal(got.status, 'done');
    assert.deepStrictEqual(got.result, want);
    // Bit-exact, including -0 and key order (so results.json is byte-identical).
    assert.equal(JSON.stringify(got.result), JSON.stringify(want));
    assert.ok(Object.is(got.result.items[0]!.score, -0));
    assert.ok(Number.isNaN(got.result.items[1]!.score));
    const gotItems = got.result.items;
    for (let i = 0; i < want.items.length; i++) {
      const a: Float64Array = new Float64Array([want.items[i]!.score]);
      const b: Float64Array = new Float64Array([gotItems[i]!.score]);
      assert.deepEqual(new Uint8Array(b.buffer), new Uint8Array(a.buffer), `item ${i}`);
    }
    assert.ok(!('outcome' in got.result.items[4]!));
    assert.equal(got.result.items[3]!.outcome, null);
    assert.ok(!('detail' in got.result.items[2]!));
    assert.deepEqual(got.options, { seed: 1234, resamples: 1000, mode: 'fp32' });
    assert.equal(got.toolVersion, '0.1.0');
    assert.equal(got.modelId, model.id);
    assert.equal(store.integrityCheck(), 'ok');
    store.close();
  });

  test('models: upsert by content key, relabelled in place; recipe kept', () => {
    const store = openStore(storePath(tmpDir()));
    const a = store.upsertModel(VARIANT);
    const b = store.upsertModel({ ...VARIANT, name: 'renamed', dir: '/moved' });
    assert.equal(b.id, a.id);
    assert.equal(b.name, 'renamed');
    assert.deepEqual(b.recipe, JSON.parse(canonicalJson(RECIPE)));
    assert.match(b.recipeSha256!, /^[0-9a-f]{64}$/);
    const c = store.upsertModel({ ...VARIANT, weightsSha256: '99'.repeat(32) });
    assert.notEqual(c.id, a.id);
    const d = store.upsertModel(DENSE);
    assert.equal(d.recipe, null);
    assert.equal(d.recipeSha256, null);
    assert.deepEqual(store.getModel(a.id), b);
    store.close();
  });

  test('a changed input is a different run, never the stored one', () => {
    const store = openStore(storePath(tmpDir()));
    const model = store.upsertModel(DENSE);
    const r = store.beginRun({ ...RUN, modelId: model.id });
    store.finishRun(r.id, makeResult('crows-pairs', 20, 2));
    assert.ok(store.findRun(runKey(RUN)) !== undefined);
    const changed = { ...RUN, dataSha256: 'ee'.repeat(32) };
    assert.equal(store.findRun(runKey(changed)), undefined);
    const r2 = store.beginRun({ ...changed, modelId: model.id });
    assert.notEqual(r2.id, r.id);
    assert.notEqual(r2.key, r.key);
    store.close();
  });

  test('run life: chunked items, restart of an interrupted run, refusals', () => {
    const file = storePath(tmpDir());
    let store = openStore(file);
    const model = store.upsertModel(DENSE);
    const want = makeResult('crows-pairs', 100, 3);
    const r = store.beginRun({ ...RUN, modelId: model.id });
    store.saveItems(r.id, want.items.slice(0, 40));
    store.saveItems(r.id, want.items.slice(40, 60));
    assert.throws(() => store.saveItems(r.id, want.items.slice(50, 51)), /saved twice/);
    assert.equal(store.listRuns({ status: 'running' })[0]!.items, 60, 'the failed chunk rolled back whole');
    store.close();

    // A new process finds it running: it is restarted from scratch under the same row.
    store = openStore(file);
    const again = store.beginRun({ ...RUN, modelId: model.id });
    assert.deepEqual(again, { id: r.id, key: r.key, restarted: true });
    assert.equal(store.listRuns()[0]!.items, 0);
    store.saveItems(r.id, want.items.slice(0, 10));
    assert.throws(() => store.finishRun(r.id, { ...want, benchmark: 'stereoset' }), DikeError);
    store.finishRun(r.id, want); // replaces the partial items with the result's
    assert.deepStrictEqual(store.findRun(r.key)!.result, want);
    assert.throws(() => store.beginRun({ ...RUN, modelId: model.id }), /already done/);
    assert.throws(() => store.saveItems(r.id, []), /already done/);
    assert.throws(() => store.finishRun(r.id, want), /already done/);
    assert.throws(() => store.beginRun({ ...RUN, modelId: 999 }), /no such model/);
    const runs = store.listRuns({ status: 'done', modelId: model.id });
    assert.equal(runs.length, 1);
    assert.equal(runs[0]!.items, 100);
    store.close();
  });

  test('the file: WAL, foreign keys, schema version; foreign files refused', () => {
    const dir = tmpDir();
    const file = path.join(dir, 'nested', 'dike.sqlite');
    openStore(file).close();
    const db = new Database(file);
    assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
    assert.deepEqual(db.prepare('SELECT version FROM schema_version').all(), [{ version: SCHEMA_VERSION }]);
    db.prepare('UPDATE schema_version SET version = ?').run(SCHEMA_VERSION + 1);
    db.close();
    assert.throws(() => openStore(file), /newer Dikē/);

    const store = openStore(storePath(dir));
    assert.throws(() => store.saveItems(12345, []), /no such run/);
    store.close();

    const other = path.join(dir, 'other.sqlite');
    const odb = new Database(other);
    odb.exec('CREATE TABLE t (x)');
    odb.close();
    assert.throws(() => openStore(other), /not a Dikē experiment store/);
    const junk = path.join(dir, 'junk.sqlite');
    fs.writeFileSync(junk, 'this is not a database, just text long enough to have a header........');
    assert.throws(() => openStore(junk), DikeError);
  });
});

describe('crash safety', () => {
  test('kill -9 while writing run 2: run 1 intact and found, run 2 not done, database ok', async () => {
    const dir = tmpDir();
    const file = storePath(dir);
    const storeUrl = new URL('../src/audit/store.js', import.meta.url).href;
    const want1 = makeResult('crows-pairs', 2000, 7);
    const run2: RunInput = { ...RUN, benchmark: 'stereoset' };
    // The child finishes run 1, then writes run 2's items in chunks until it is killed.
    const child = `
      import { openStore } from ${JSON.stringify(storeUrl)};
      const makeResult = ${makeResult.toString()};
      const input = JSON.parse(process.argv[1]);
      const store = openStore(input.file);
      const model = store.upsertModel(input.dense);
      const r1 = store.beginRun({ ...input.run1, modelId: model.id });
      store.finishRun(r1.id, makeResult('crows-pairs', 2000, 7));
      process.stdout.write('run1 done\\n');
      const r2 = store.beginRun({ ...input.run2, modelId: model.id });
      for (let chunk = 0; ; chunk++) {
        const items = makeResult('stereoset', 2000, 100 + chunk).items.map((it) => ({ ...it, id: chunk + '/' + it.id }));
        store.saveItems(r2.id, items);
        process.stdout.write('chunk ' + chunk + '\\n');
      }
    `;
    const proc = spawn(process.execPath, ['--input-type=module', '-e', child, JSON.stringify({ file, dense: DENSE, run1: RUN, run2 })], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<NodeJS.Signals | number | null>((resolve) => proc.on('exit', (code, signal) => resolve(signal ?? code)));
    await new Promise<void>((resolve, reject) => {
      proc.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        // Let a few chunks commit, then kill while the next one is being written.
        if (/chunk 5\n/.test(out)) resolve();
      });
      proc.on('exit', () => reject(new Error(`child exited early: ${out}\n${err}`)));
    });
    proc.kill('SIGKILL');
    assert.equal(await exited, 'SIGKILL');
    assert.match(out, /run1 done/);
    assert.ok(fs.existsSync(`${file}-wal`), 'the WAL was left behind, so reopening recovers from it');

    const store = openStore(file);
    assert.equal(store.integrityCheck(), 'ok');
    const got1 = store.findRun(runKey(RUN));
    assert.ok(got1 !== undefined, 'run 1 is found by its key');
    assert.deepStrictEqual(got1.result, want1);
    assert.equal(store.findRun(runKey(run2)), undefined, 'run 2 is not reported as done');
    const running = store.listRuns({ status: 'running' });
    assert.equal(running.length, 1);
    assert.equal(running[0]!.benchmark, 'stereoset');
    assert.ok(running[0]!.items >= 6 * 2000 && running[0]!.items % 2000 === 0, `whole chunks only (${running[0]!.items} items)`);

    // The rerun restarts run 2 and finishes it.
    const model = store.upsertModel(DENSE);
    const r2 = store.beginRun({ ...run2, modelId: model.id });
    assert.equal(r2.restarted, true);
    const want2 = makeResult('stereoset', 300, 9);
    store.finishRun(r2.id, want2);
    assert.deepStrictEqual(store.findRun(runKey(run2))!.result, want2);
    assert.equal(store.integrityCheck(), 'ok');
    store.close();
    const db = new Database(file, { readonly: true });
    assert.deepEqual(db.pragma('foreign_key_check'), []);
    db.close();
  });
});
