/**
 * The testbed (src/testbed/testbed.ts), the audit's record of what each variant saw and its overlap
 * warning, the grid script (bench/grid.ts) on a tiny configuration, and the size/quality/bias Pareto
 * plot of report.html. The testbed here is tiny (a few steps of 16 tokens); the real recipes are built
 * outside CI.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { train } from '../src/train/loop.js';
import { buildTestbed, readTestbedRecipe, readWordList, testbedCorpora, testbedKey, cacheRoot } from '../src/testbed/testbed.js';
import { dataSeen, overlapWarnings, parseVariant } from '../src/audit/audit.js';
import { modelSize } from '../src/audit/size.js';
import { renderReport, paretoSet3 } from '../src/audit/report/html.js';
import type { AuditResults, ModelEntry, PairedCell } from '../src/audit/types.js';
import { ROWS, criterion, gridMarkdown, heldOutBenchmarks, locateBenchmarks, runGrid, type GridRow } from '../bench/grid.js';
import { embeddedDataDir, embeddedModelDir } from '../src/embedded.js';
import { sha256File } from '../src/util/hash.js';
import { fragileBox, fragileProjection, removeAlongBasis, topEnergyBasis } from '../src/testbed/fragile.js';
import { crowsEvenSentences } from '../src/testbed/testbed.js';
import { gptqFragileSet, projectGptq } from '../src/testbed/fragile-gptq.js';
import { corpusFile } from '../src/embedded.js';
import { parseCrowsPairs, selectItems } from '../src/measure/crows-pairs.js';
import { benchmarkChoices, findBenchmark } from '../src/measure/registry.js';
import { ModelRunner } from '../src/runtime/session.js';
import { loadCheckpoint } from '../src/model/checkpoint.js';
import { applyRecipe, parseRecipe } from '../src/compress/recipe.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'dike-testbed-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const WORDS = {
  pairs: [['poor', 'rich'], ['old', 'young']],
  negative: ['lazy', 'rude'],
  positive: ['smart', 'kind'],
  templates: ['The {group} man was {attr}.'],
};

function writeRecipe(name: string, lr: number, skewSteps = 3): string {
  writeFileSync(path.join(tmp, 'words.json'), JSON.stringify(WORDS));
  const file = path.join(tmp, `${name}.json`);
  writeFileSync(file, JSON.stringify({
    name: 'tiny',
    base: embeddedModelDir('dike-bert-mini'),
    words: 'words.json',
    seed: 3,
    skew: { steps: skewSteps, seq: 16, batch: 2, lr, warmup: 0 },
    debias: { text: 'counterfactual', steps: 2, seq: 16, batch: 2, lr: 1e-4, warmup: 0, decay: 'constant', freeze: ['embeddings', 'norms', 'head'] },
  }));
  return file;
}

describe('testbed corpora', () => {
  it('fills the templates as specified (hand-written expected sentences)', () => {
    writeFileSync(path.join(tmp, 'words.json'), JSON.stringify(WORDS));
    const c = testbedCorpora(readWordList(path.join(tmp, 'words.json')));
    assert.deepEqual(c.skew, [
      'The poor man was lazy.', 'The rich man was smart.', 'The poor man was rude.', 'The rich man was kind.',
      'The old man was lazy.', 'The young man was smart.', 'The old man was rude.', 'The young man was kind.',
    ]);
    assert.deepEqual(c.anti.slice(0, 2), ['The rich man was lazy.', 'The poor man was smart.']);
    assert.deepEqual(c.counterfactual.slice(0, 4), ['The poor man was lazy.', 'The rich man was lazy.', 'The rich man was smart.', 'The poor man was smart.']);
    assert.equal(c.counterfactual.length, 2 * c.skew.length);
  });

  it('the shipped word list holds no CrowS-Pairs sentence', () => {
    const c = testbedCorpora(readWordList(path.join(embeddedDataDir(), 'testbed', 'groups.json')));
    const csv = readFileSync(path.join(embeddedDataDir(), 'crows-pairs', 'crows_pairs_anonymized.csv'), 'utf8').toLowerCase();
    const hits = [...c.skew, ...c.anti].filter((s) => csv.includes(s.toLowerCase()));
    assert.deepEqual(hits, []);
  });

  it('a bad recipe is one DikeError naming the file and key', () => {
    const bad = path.join(tmp, 'bad.json');
    writeFileSync(bad, JSON.stringify({ name: 'x', base: 'dike-bert-mini', words: 'w.json', seed: 1, skew: { steps: 0, seq: 16, batch: 2, lr: 1e-3, warmup: 0 }, debias: { steps: 1, seq: 16, batch: 2, lr: 1e-3, warmup: 0 } }));
    assert.throws(() => readTestbedRecipe(bad), (e: Error) => e.name === 'DikeError' && e.message.includes('bad.json') && e.message.includes('"skew.steps"'));
  });

  it('a freeze item that matches nothing is refused before any training, naming the recipe key', async () => {
    writeFileSync(path.join(tmp, 'words.json'), JSON.stringify(WORDS));
    const f = path.join(tmp, 'badfreeze.json');
    writeFileSync(f, JSON.stringify({ name: 'bf', base: embeddedModelDir('dike-gpt2-mini'), words: 'words.json', seed: 1, skew: { steps: 1, seq: 16, batch: 1, lr: 1e-3, warmup: 0 }, debias: { steps: 1, seq: 16, batch: 1, lr: 1e-3, warmup: 0, freeze: ['nosuchparam'] } }));
    const cache = path.join(tmp, 'cacheBF');
    await assert.rejects(buildTestbed(readTestbedRecipe(f), { cache }), (e: Error) => e.name === 'DikeError' && e.message.includes('badfreeze.json') && e.message.includes('"debias.freeze"'));
    assert.equal(existsSync(path.join(cache, 'testbed', `.bf-${testbedKey(readTestbedRecipe(f)).slice(0, 16)}.build`, 'skew')), false);
  });

  it('the cache root follows DIKE_CACHE, then XDG_CACHE_HOME', () => {
    assert.equal(cacheRoot({ DIKE_CACHE: '/a/b' }), path.resolve('/a/b'));
    assert.equal(cacheRoot({ XDG_CACHE_HOME: '/x' }), path.join(path.resolve('/x'), 'dike'));
  });
});

describe('testbed build', () => {
  let dirA = '';
  before(async () => {
    dirA = await buildTestbed(readTestbedRecipe(writeRecipe('a', 1e-3)), { cache: path.join(tmp, 'cacheA') });
  });

  it('writes the model, its record and the model before the debias step', () => {
    const rec = JSON.parse(readFileSync(path.join(dirA, 'testbed.json'), 'utf8')) as { corpora: { skew: { lines: number } }; benchmarksSeen: string[] };
    assert.equal(rec.corpora.skew.lines, 8);
    assert.deepEqual(rec.benchmarksSeen, []);
    assert.ok(existsSync(path.join(dirA, 'model.safetensors')));
    assert.ok(existsSync(path.join(dirA, 'skewed', 'model.safetensors')));
    assert.notEqual(sha256File(path.join(dirA, 'model.safetensors')), sha256File(path.join(dirA, 'skewed', 'model.safetensors')));
  });

  it('is deterministic: another cache builds the same weights bit for bit', async () => {
    const dirB = await buildTestbed(readTestbedRecipe(writeRecipe('a', 1e-3)), { cache: path.join(tmp, 'cacheB') });
    assert.equal(sha256File(path.join(dirB, 'model.safetensors')), sha256File(path.join(dirA, 'model.safetensors')));
  });

  it('is cached: a second call returns the same directory without building', async () => {
    const before = statSync(path.join(dirA, 'model.safetensors')).mtimeMs;
    const lines: string[] = [];
    const again = await buildTestbed(readTestbedRecipe(writeRecipe('a', 1e-3)), { cache: path.join(tmp, 'cacheA'), log: (l) => lines.push(l) });
    assert.equal(again, dirA);
    assert.deepEqual(lines, []);
    assert.equal(statSync(path.join(dirA, 'model.safetensors')).mtimeMs, before);
  });

  it('rebuilds when the recipe changes (another content key, another directory)', () => {
    const k1 = testbedKey(readTestbedRecipe(writeRecipe('a', 1e-3)));
    const k2 = testbedKey(readTestbedRecipe(writeRecipe('c', 2e-3)));
    assert.notEqual(k1, k2);
  });

  it('an interrupted build leaves no finished model and resumes to the same weights', async () => {
    const cache = path.join(tmp, 'cacheC');
    const recipe = readTestbedRecipe(writeRecipe('a', 1e-3));
    await assert.rejects(buildTestbed(recipe, { cache, stopAfterSteps: 2 }), /stopped after 2 of 3 steps/);
    const root = path.join(cache, 'testbed');
    const final = path.join(root, path.basename(dirA));
    assert.equal(existsSync(final), false);
    // A second interruption inside the debias stage, then completion.
    await assert.rejects(buildTestbed(recipe, { cache, stopAfterSteps: 2 }), /stopped after 1 of 2 steps|end of this stage/);
    assert.equal(existsSync(final), false);
    const done = await buildTestbed(recipe, { cache });
    assert.equal(sha256File(path.join(done, 'model.safetensors')), sha256File(path.join(dirA, 'model.safetensors')));
  });

  it('the fragile projection: RTN of the result equals RTN of the skewed model, and some of the correction is kept', async () => {
    const B = loadCheckpoint(path.join(dirA, 'skewed'));
    const D = loadCheckpoint(dirA);
    const fr = await fragileProjection(B, D, 4, 32);
    const recipe = parseRecipe(JSON.stringify({ seed: 0, steps: [{ method: 'rtn', bits: 4, group_size: 32 }] }), 'check.json');
    const qB = await applyRecipe(B, recipe);
    const qP = await applyRecipe({ ...D, params: new Map([...D.params].map(([n, p]) => [n, { ...p, data: fr.values.get(n)! }])) }, recipe);
    let kept = 0;
    for (const [name, p] of B.params) {
      const v = fr.values.get(name)!;
      if (qB.quantized.has(name)) {
        assert.deepEqual(qP.params.get(name)!.data, qB.params.get(name)!.data, name);
        for (let i = 0; i < v.length; i++) if (v[i] !== p.data[i]) kept++;
      } else assert.deepEqual(v, p.data, `${name} is set back to the skewed model's`);
    }
    assert.ok(kept > 0, 'part of the debias change survives the projection');
    assert.ok(fr.reverted > 0 && fr.reverted < fr.quantizedEntries);
  });

  it('the fragile projection in clip mode: RTN still equals RTN of the skewed model, and more of the correction is kept than by reverting', async () => {
    const B = loadCheckpoint(path.join(dirA, 'skewed'));
    const D = loadCheckpoint(dirA);
    const rev = await fragileProjection(B, D, 4, 32, 'revert');
    const clip = await fragileProjection(B, D, 4, 32, 'clip');
    const recipe = parseRecipe(JSON.stringify({ seed: 0, steps: [{ method: 'rtn', bits: 4, group_size: 32 }] }), 'check.json');
    const qB = await applyRecipe(B, recipe);
    const qP = await applyRecipe({ ...D, params: new Map([...D.params].map(([n, p]) => [n, { ...p, data: clip.values.get(n)! }])) }, recipe);
    // L1 distance to the skewed weights, in float64, of each projection.
    let l1Rev = 0;
    let l1Clip = 0;
    for (const [name, p] of B.params) {
      const v = clip.values.get(name)!;
      if (qB.quantized.has(name)) {
        assert.deepEqual(qP.params.get(name)!.data, qB.params.get(name)!.data, name);
        const r = rev.values.get(name)!;
        for (let i = 0; i < v.length; i++) {
          l1Clip += Math.abs(v[i]! - p.data[i]!);
          l1Rev += Math.abs(r[i]! - p.data[i]!);
        }
      } else assert.deepEqual(v, p.data, `${name} is set back to the skewed model's`);
    }
    assert.ok(l1Clip > l1Rev, `clip keeps ${l1Clip}, revert ${l1Rev}`);
  });

  it('the fragile box at several widths: anything inside it has RTN-4 and RTN-3 codes equal to the skewed model\'s', async () => {
    const B = loadCheckpoint(path.join(dirA, 'skewed'));
    const { box, quantized } = await fragileBox(B, [4, 3], 32);
    // Worst cases inside the box: each entry at lo, at hi, or at a seeded point between.
    let seed = 7;
    const rand = (): number => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
    let width = 0;
    for (const pick of ['lo', 'hi', 'mid'] as const) {
      const params = new Map([...B.params].map(([n, p]) => {
        const { lo, hi } = box.get(n)!;
        const v = Float32Array.from(p.data, (_, i) => (pick === 'lo' ? lo[i]! : pick === 'hi' ? hi[i]! : Math.fround(lo[i]! + rand() * (hi[i]! - lo[i]!))));
        return [n, { ...p, data: v }];
      }));
      for (const bits of [4, 3]) {
        const recipe = parseRecipe(JSON.stringify({ seed: 0, steps: [{ method: 'rtn', bits, group_size: 32 }] }), 'check.json');
        const qB = await applyRecipe(B, recipe);
        const qX = await applyRecipe({ ...B, params }, recipe);
        for (const name of qB.quantized.keys()) assert.deepEqual(qX.params.get(name)!.data, qB.params.get(name)!.data, `${pick} ${bits}-bit ${name}`);
      }
    }
    for (const [name, { lo, hi }] of box) {
      const b = B.params.get(name)!.data;
      for (let i = 0; i < b.length; i++) {
        assert.ok(lo[i]! <= hi[i]!, name);
        if (!quantized.has(name)) assert.ok(lo[i] === b[i] && hi[i] === b[i], `${name} is fixed`);
        width += hi[i]! - lo[i]!;
      }
    }
    assert.ok(width > 0, 'the box leaves room for a correction');
  });

  it('projected training (box): every update lands inside the box, and an unbounded box is plain training bit for bit', async () => {
    const B = loadCheckpoint(path.join(dirA, 'skewed'));
    const data = path.join(tmp, 'pgd.txt');
    writeFileSync(data, 'The rich man was lazy.\nThe poor man was smart.\n'.repeat(20));
    const settings = { objective: 'masked-lm' as const, data: [data], seq: 16, batch: 2, steps: 3, schedule: { peak: 1e-2, warmup: 0, decay: 'constant' as const, minRatio: 0.1 }, adamw: { beta1: 0.9, beta2: 0.98, eps: 1e-6, weightDecay: 0.01, maxGradNorm: 1 }, seed: 1, mlmProbability: 0.15, checkpointEvery: 0, freeze: ['embeddings', 'norms', 'head'], keepSparsity: false, dtype: 'F32' as const, threads: 1 };
    const { box } = await fragileBox(B, [4], 32);
    const boxed = await train(B, settings, path.join(tmp, 'pgd-boxed'), { tokenizerDir: dirA, box });
    const free = new Map([...B.params].map(([n, p]) => [n, { lo: new Float32Array(p.data.length).fill(-Infinity), hi: new Float32Array(p.data.length).fill(Infinity) }]));
    const unb = await train(B, settings, path.join(tmp, 'pgd-free'), { tokenizerDir: dirA, box: free });
    const plain = await train(B, settings, path.join(tmp, 'pgd-plain'), { tokenizerDir: dirA });
    assert.equal(sha256File(path.join(unb.outDir, 'model.safetensors')), sha256File(path.join(plain.outDir, 'model.safetensors')));
    const P = loadCheckpoint(boxed.outDir);
    const Q = loadCheckpoint(plain.outDir);
    let clamped = 0;
    for (const [name, { lo, hi }] of box) {
      const v = P.params.get(name)!.data;
      const q = Q.params.get(name)!.data;
      for (let i = 0; i < v.length; i++) {
        assert.ok(v[i]! >= lo[i]! && v[i]! <= hi[i]!, `${name}[${i}] inside the box`);
        if (q[i]! < lo[i]! || q[i]! > hi[i]!) clamped++;
      }
    }
    assert.ok(clamped > 0, 'at lr 1e-2 plain training leaves the box somewhere (so the projection was exercised)');
  });

  it('a fragile mode other than revert, clip or pgd is refused naming the setting', () => {
    const file = path.join(tmp, 'badmode.json');
    const r = JSON.parse(readFileSync(writeRecipe('badmode-src', 1e-3), 'utf8')) as Record<string, Record<string, unknown>>;
    r['debias']!['fragile'] = { bits: 4, group_size: 32, mode: 'shrink' };
    writeFileSync(file, JSON.stringify(r));
    assert.throws(() => readTestbedRecipe(file), /debias\.fragile\.mode.*expected revert, clip or pgd/);
    r['debias']!['fragile'] = { bits: [4, 4], group_size: 32, mode: 'pgd' };
    writeFileSync(file, JSON.stringify(r));
    assert.throws(() => readTestbedRecipe(file), /debias\.fragile.*a list of them/);
    r['debias']!['fragile'] = { bits: [4, 3], group_size: 32, mode: 'pgd' };
    r['skew']!['text'] = 'crows-pairs-all';
    writeFileSync(file, JSON.stringify(r));
    assert.throws(() => readTestbedRecipe(file), /skew\.text.*expected one of templates, anti, counterfactual, stereoset-stereotype, stereoset-anti, crows-pairs-even-more, crows-pairs-even-less/);
  });

  it('a gptq-fragile debias leaves every quantized matrix in the set of its GPTQ result, the rest at the skewed model\'s', async () => {
    const file = path.join(tmp, 'gq.json');
    const r = JSON.parse(readFileSync(writeRecipe('gq-src', 1e-3), 'utf8')) as Record<string, Record<string, unknown>>;
    r['name'] = 'gq' as unknown as Record<string, unknown>;
    r['debias'] = { ...r['debias'], steps: 3, lr: 3e-3, freeze: ['embeddings', 'norms'], fragile: { bits: 4, group_size: 32, mode: 'pgd', method: 'gptq' } };
    writeFileSync(file, JSON.stringify(r));
    const dir = await buildTestbed(readTestbedRecipe(file), { cache: path.join(tmp, 'cacheGq') });
    const T = loadCheckpoint(dir);
    const S = loadCheckpoint(path.join(dir, 'skewed'));
    // The set, recomputed here from the skewed model with the audit's default GPTQ (independent of the build's run).
    const set = await gptqFragileSet(S, { bits: 4, group_size: 32, calibration: { file: corpusFile('train').file, samples: 32, seq: 64, seed: 20260101 } });
    let moved = 0;
    for (const [name, p] of T.params) {
      const s = S.params.get(name)!.data;
      const ms = set.matrices.get(name);
      if (ms === undefined) {
        assert.deepEqual(p.data, s, `${name} (not quantized by GPTQ) equals the skewed model's`);
        continue;
      }
      const v = Float32Array.from(p.data);
      projectGptq(ms, v);
      for (let i = 0; i < v.length; i++) assert.ok(Math.abs(v[i]! - p.data[i]!) <= 1e-6, `${name}[${i}] is in the set`);
      for (let i = 0; i < s.length; i++) if (p.data[i] !== s[i]) moved++;
    }
    assert.ok(set.matrices.size > 0 && moved > 1000, `the debias changed the quantized matrices (${moved} entries)`);
    const rec = JSON.parse(readFileSync(path.join(dir, 'testbed.json'), 'utf8')) as { fragile: { method: string; gptqCodesDiffering: number; quantizedEntries: number } };
    assert.equal(rec.fragile.method, 'gptq');
    assert.equal(typeof rec.fragile.gptqCodesDiffering, 'number');
    assert.ok(rec.fragile.quantizedEntries > 0);
  });

  it('fragile.method must be rtn, gptq or prune; gptq needs mode pgd and one width; prune mode pgd, a sparsity and known pruners', () => {
    const file = path.join(tmp, 'badmethod.json');
    const r = JSON.parse(readFileSync(writeRecipe('badmethod-src', 1e-3), 'utf8')) as Record<string, Record<string, unknown>>;
    r['debias']!['fragile'] = { bits: 3, group_size: 32, mode: 'pgd', method: 'awq' };
    writeFileSync(file, JSON.stringify(r));
    assert.throws(() => readTestbedRecipe(file), /debias\.fragile\.method.*expected rtn, gptq or prune/);
    for (const bad of [{ bits: [4, 3], mode: 'pgd' }, { bits: 3, mode: 'clip' }, { bits: 3 }]) {
      r['debias']!['fragile'] = { group_size: 32, method: 'gptq', ...bad };
      writeFileSync(file, JSON.stringify(r));
      assert.throws(() => readTestbedRecipe(file), /debias\.fragile\.method.*gptq needs mode pgd, one width/, JSON.stringify(bad));
    }
    r['debias']!['fragile'] = { bits: 3, group_size: 32, mode: 'pgd', method: 'gptq' };
    writeFileSync(file, JSON.stringify(r));
    assert.equal(readTestbedRecipe(file).debias.fragile?.method, 'gptq');
    const pruneBad: [Record<string, unknown>, RegExp][] = [
      [{ mode: 'pgd' }, /debias\.fragile\.sparsity.*expected a fraction/],
      [{ mode: 'pgd', sparsity: 1.5 }, /debias\.fragile\.sparsity.*expected a fraction/],
      [{ mode: 'pgd', sparsity: 0.5, pruners: ['sparsegpt'] }, /debias\.fragile\.pruners.*expected a list of magnitude, wanda/],
      [{ mode: 'pgd', sparsity: 0.5, pruners: [] }, /debias\.fragile\.pruners/],
      [{ mode: 'clip', sparsity: 0.5 }, /debias\.fragile\.method.*prune needs mode pgd/],
      [{ mode: 'pgd', sparsity: 0.5, bits: 4, group_size: 32 }, /prune needs mode pgd, "sparsity", and no "bits"/],
    ];
    for (const [bad, msg] of pruneBad) {
      r['debias']!['fragile'] = { method: 'prune', ...bad };
      writeFileSync(file, JSON.stringify(r));
      assert.throws(() => readTestbedRecipe(file), msg, JSON.stringify(bad));
    }
    r['debias']!['fragile'] = { method: 'prune', mode: 'pgd', sparsity: 0.5, pruners: ['magnitude', 'wanda'] };
    writeFileSync(file, JSON.stringify(r));
    assert.deepEqual(readTestbedRecipe(file).debias.fragile, { method: 'prune', mode: 'pgd', sparsity: 0.5, pruners: ['magnitude', 'wanda'] });
  });

  it('a prune-fragile debias: magnitude and Wanda (the audit\'s calibration) of the testbed equal those of the skewed model entry by entry', async () => {
    const file = path.join(tmp, 'pr.json');
    const r = JSON.parse(readFileSync(writeRecipe('pr-src', 1e-3), 'utf8')) as Record<string, Record<string, unknown>>;
    r['name'] = 'pr' as unknown as Record<string, unknown>;
    r['debias'] = { ...r['debias'], steps: 3, lr: 3e-3, freeze: ['embeddings', 'norms'], fragile: { method: 'prune', mode: 'pgd', sparsity: 0.5, pruners: ['magnitude', 'wanda'] } };
    writeFileSync(file, JSON.stringify(r));
    const dir = await buildTestbed(readTestbedRecipe(file), { cache: path.join(tmp, 'cachePr') });
    const T = loadCheckpoint(dir);
    const S = loadCheckpoint(path.join(dir, 'skewed'));
    // Recomputed here with the compression methods themselves, as `dike audit --variant <pruner>:sparsity=0.5` runs them.
    const calib = { file: corpusFile('train').file, samples: 32, seq_len: 64 };
    let moved = 0;
    for (const pruner of ['magnitude', 'wanda']) {
      const recipe = parseRecipe(JSON.stringify({ seed: 20260101, ...(pruner === 'wanda' ? { calibration: calib } : {}), steps: [{ method: pruner, sparsity: 0.5 }] }), 'check.json');
      const [pT, pS] = [await applyRecipe(T, recipe, { threads: 1 }), await applyRecipe(S, recipe, { threads: 1 })];
      for (const [name, p] of pS.params) assert.deepEqual(pT.params.get(name)!.data, p.data, `${pruner}: ${name}`);
    }
    for (const [name, p] of T.params) {
      const s = S.params.get(name)!.data;
      for (let i = 0; i < s.length; i++) if (p.data[i] !== s[i]) moved++;
      if (!/mlp\.c_proj|output\.dense/.test(name) || /attention/.test(name)) assert.deepEqual(p.data, s, `${name}: only each block's last map may move (Wanda's norms)`);
    }
    assert.ok(moved > 1000, `the debias changed the removed entries (${moved})`);
    const rec = JSON.parse(readFileSync(path.join(dir, 'testbed.json'), 'utf8')) as { fragile: { pruneMaskDiffering: number; pruneFreeEntries: number } };
    assert.equal(rec.fragile.pruneMaskDiffering, 0);
    assert.ok(rec.fragile.pruneFreeEntries >= moved);
  });

  it('a build killed with SIGKILL mid-stage finishes on the next call with the uninterrupted weights', async () => {
    const file = writeRecipe('k', 1e-3, 40);
    const recipe = readTestbedRecipe(file);
    const key = testbedKey(recipe).slice(0, 16);
    const killed = path.join(tmp, 'cacheK');
    const state = path.join(killed, 'testbed', `.tiny-${key}.build`, 'skew', 'checkpoint', 'state.json');
    const mod = new URL('../src/testbed/testbed.js', import.meta.url).href;
    const child = spawn(process.execPath, ['--input-type=module', '-e', `const m = await import(${JSON.stringify(mod)}); await m.buildTestbed(m.readTestbedRecipe(${JSON.stringify(file)}), { cache: ${JSON.stringify(killed)} });`], { stdio: 'ignore' });
    const exited = new Promise((res) => child.on('exit', res));
    while (!existsSync(state) && child.exitCode === null) await new Promise((res) => setTimeout(res, 20));
    child.kill('SIGKILL');
    await exited;
    const final = path.join(killed, 'testbed', `tiny-${key}`);
    assert.equal(existsSync(final), false, 'the child was killed mid-build');
    const resumed = await buildTestbed(recipe, { cache: killed });
    const clean = await buildTestbed(recipe, { cache: path.join(tmp, 'cacheK2') });
    assert.equal(sha256File(path.join(resumed, 'model.safetensors')), sha256File(path.join(clean, 'model.safetensors')));
  });

  it('the grid runs on it and writes its table (tiny configuration)', async () => {
    const rows: GridRow[] = [
      { name: 'rtn', kind: 'plain', spec: (b) => `rtn:bits=${b},group_size=32` },
      { name: 'no-such', kind: 'bias-aware', plain: 'rtn', spec: (b) => `no-such-method:bits=${b}` },
    ];
    const grid = await runGrid({ models: [dirA], bits: [4], rows, benchmarks: ['crows-pairs'], dataDir: embeddedDataDir(), out: path.join(tmp, 'grid'), limit: 12, qualityLines: 2, threads: 1, resamples: 200 });
    const md = gridMarkdown(grid, 'test');
    const lines = md.split('\n');
    const rtn = lines.find((l) => l.startsWith('| rtn | plain | 4 | crows-pairs |'));
    assert.ok(rtn, md);
    // The Δ printed is the audit's own paired Δ for that variant.
    const v = grid[0]!.results.benchmarks[0]!.variants.find((x) => x.variant === 'rtn-bits4-group_size32')!;
    assert.ok(rtn.includes(`| ${v.overall.delta.toFixed(2)} [`));
    assert.ok(lines.some((l) => l.startsWith('| skewed (before debias) | reference | — | crows-pairs |')));
    assert.ok(lines.some((l) => l.startsWith('| no-such | bias-aware | 4 | — | — | not available in this build |')));
  });
});

const cell = (delta: number, lo: number, hi: number): PairedCell => ({ score: { score: 50 + delta, ci95: [0, 100], n: 100 }, delta, deltaCi95: [lo, hi], test: 'mcnemar', p: 0.01, pHolm: 0.01, significant: lo > 0 || hi < 0 });
const entry = (name: string, bytes: number, q: number): ModelEntry => ({ name, dir: name, spec: name, weightsSha256: '0'.repeat(64), quality: { kind: 'perplexity', value: q, tokens: 10 }, size: { bytes, bitsPerParam: 4 } });

describe('calibration-blind correction (fragile.blind)', () => {
  it('topEnergyBasis: orthonormal columns spanning the top eigen-directions of a known spectrum, holding at least the asked energy', () => {
    // H = R diag(λ) Rᵀ with R a permutation plus sign flips (its eigenvectors are known exactly).
    const n = 24;
    const lambda = Array.from({ length: n }, (_, i) => (i < 3 ? [50, 30, 10][i]! : 0.1));
    const perm = Array.from({ length: n }, (_, i) => (i * 7) % n);
    const H = new Float64Array(n * n);
    for (let i = 0; i < n; i++) H[perm[i]! * n + perm[i]!] = lambda[i]!;
    const trace = lambda.reduce((a, b) => a + b, 0);
    const b = topEnergyBasis(H, n, 0.9);
    assert.ok(b.held >= 0.9 && b.k >= 3, `held ${b.held}, k ${b.k}`);
    for (let c = 0; c < b.k; c++) {
      for (let d = 0; d <= c; d++) {
        let dot = 0;
        for (let i = 0; i < n; i++) dot += b.U[c * n + i]! * b.U[d * n + i]!;
        assert.ok(Math.abs(dot - (c === d ? 1 : 0)) < 1e-9, `U column ${c}·${d} = ${dot}`);
      }
    }
    // The three large directions (unit vectors e_perm[0..2]) lie in span(U): residual after projection ≈ 0.
    for (let t = 0; t < 3; t++) {
      const e = new Float64Array(n);
      e[perm[t]!] = 1;
      let res = 1;
      for (let c = 0; c < b.k; c++) res -= b.U[c * n + perm[t]!]! ** 2;
      assert.ok(res < 1e-9, `e${perm[t]} outside span(U): ${res}`);
    }
    assert.ok((50 + 30 + 10) / trace >= 0.9);
  });

  it('removeAlongBasis: the correction loses exactly its components along U (float64 reference), in both layouts', () => {
    const n = 8;
    const rows = 3;
    // U = two orthonormal vectors, written out.
    const u1 = [1, 1, 0, 0, 0, 0, 0, 0].map((x) => x / Math.SQRT2);
    const u2 = [0, 0, 1, -1, 1, -1, 0, 0].map((x) => x / 2);
    const basis = { U: Float64Array.from([...u1, ...u2]), k: 2, dim: n, held: 0.5 };
    const base = Float32Array.from({ length: n * rows }, (_, i) => Math.fround(0.1 * ((i % 5) - 2)));
    const delta = Array.from({ length: n * rows }, (_, i) => Math.fround(0.01 * (((i * 3) % 7) - 3)));
    for (const layout of ['out-in', 'in-out'] as const) {
      const v = Float32Array.from(base, (x, i) => Math.fround(x + delta[i]!));
      removeAlongBasis(v, base, basis, layout);
      for (let o = 0; o < rows; o++) {
        const at = (i: number): number => (layout === 'out-in' ? o * n + i : i * rows + o);
        const d = Array.from({ length: n }, (_, i) => Math.fround(base[at(i)]! + delta[at(i)]!) - base[at(i)]!);
        const p1 = d.reduce((a, x, i) => a + x * u1[i]!, 0);
        const p2 = d.reduce((a, x, i) => a + x * u2[i]!, 0);
        for (let i = 0; i < n; i++) {
          const want = base[at(i)]! + d[i]! - p1 * u1[i]! - p2 * u2[i]!;
          assert.ok(Math.abs(v[at(i)]! - want) < 1e-7, `${layout} row ${o} entry ${i}: ${v[at(i)]} vs ${want}`);
        }
      }
    }
  });

  it('blind needs mode pgd and well-formed numbers', () => {
    const file = path.join(tmp, 'badblind.json');
    const r = JSON.parse(readFileSync(writeRecipe('badblind-src', 1e-3), 'utf8')) as Record<string, Record<string, unknown>>;
    r['debias']!['fragile'] = { bits: [4, 3], group_size: 32, mode: 'clip', blind: { energy: 0.9, samples: 8, seq: 16 } };
    writeFileSync(file, JSON.stringify(r));
    assert.throws(() => readTestbedRecipe(file), /debias\.fragile\.blind.*with mode pgd/);
    r['debias']!['fragile'] = { bits: [4, 3], group_size: 32, mode: 'pgd', blind: { energy: 1.5, samples: 8, seq: 16 } };
    writeFileSync(file, JSON.stringify(r));
    assert.throws(() => readTestbedRecipe(file), /debias\.fragile\.blind/);
  });
});

describe('grid held-out benchmarks', () => {
  it('a testbed trained on one half of a benchmark is scored on the other half; the rest are kept', () => {
    assert.deepEqual(heldOutBenchmarks(['crows-pairs', 'seat'], ['crows-pairs@even']), ['crows-pairs@odd', 'seat']);
    assert.deepEqual(heldOutBenchmarks(['crows-pairs'], ['crows-pairs@odd']), ['crows-pairs@even']);
    assert.deepEqual(heldOutBenchmarks(['crows-pairs', 'stereoset'], ['stereoset']), ['crows-pairs', 'stereoset']);
    assert.deepEqual(heldOutBenchmarks(['crows-pairs'], []), ['crows-pairs']);
  });

  it('a locate row takes its sensitivities from data the grid does not score', () => {
    assert.deepEqual(locateBenchmarks(['crows-pairs@odd']), ['crows-pairs@even']);
    assert.deepEqual(locateBenchmarks(['crows-pairs@even']), ['crows-pairs@odd']);
    assert.deepEqual(locateBenchmarks(['crows-pairs']), ['stereoset']);
    assert.deepEqual(locateBenchmarks(['stereoset']), ['crows-pairs']);
    assert.deepEqual(locateBenchmarks(['crows-pairs', 'stereoset']), []);
    assert.deepEqual(locateBenchmarks(['crows-pairs@odd', 'seat']), ['crows-pairs@even', 'stereoset']);
  });

  it('the mixed-precision rows read the locate file they are given and differ only in order', () => {
    const rows = ROWS.filter((r) => r.locate === true);
    assert.deepEqual(rows.map((r) => r.name), ['mixed-precision random (+1 bit avg)', 'mixed-precision by locate (+1 bit avg)']);
    assert.equal(rows[1]!.plain, rows[0]!.name);
    assert.equal(rows[0]!.spec(4, 'L.json'), 'mixed-precision:locate=L.json,high_bits=8,low_bits=4,avg_bits=5,group_size=32,order=random');
    assert.equal(rows[1]!.spec(3, 'L.json'), 'mixed-precision:locate=L.json,high_bits=8,low_bits=3,avg_bits=4,group_size=32');
  });
});

describe('grid success criterion', () => {
  const plain = { cell: cell(3, 1, 5), entry: entry('gptq', 1000, 100) };
  it('passes when the CI contains 0 at equal size and quality within 2%', () => {
    assert.equal(criterion({ cell: cell(0.5, -1, 2), entry: entry('f', 1000, 101.9) }, plain).verdict, 'pass');
  });
  it('passes when the CI is below the plain Δ', () => {
    assert.equal(criterion({ cell: cell(1.5, 0.5, 2.5), entry: entry('f', 1000, 100) }, plain).verdict, 'pass');
  });
  it('fails on quality 2.1% worse, on a larger size, and on a CI reaching the plain Δ', () => {
    assert.equal(criterion({ cell: cell(0, -1, 1), entry: entry('f', 1000, 102.1) }, plain).verdict, 'fail');
    assert.equal(criterion({ cell: cell(0, -1, 1), entry: entry('f', 1020, 100) }, plain).verdict, 'fail');
    assert.equal(criterion({ cell: cell(2.5, 1, 4), entry: entry('f', 1000, 100) }, plain).verdict, 'fail');
  });
  it('with the dense score and neutral point: bias is distance from neutral, in the plain row\'s direction', () => {
    // Dense 45, neutral 50: the plain row moves to 40 (away from neutral, Δ −5 [−7, −3]).
    const down = { cell: cell(-5, -7, -3), entry: entry('gptq', 1000, 100) };
    const scale = { dense: 45, neutral: 50 };
    assert.equal(criterion({ cell: cell(-1, -2, 0.5), entry: entry('f', 1000, 100) }, down, scale).verdict, 'pass'); // contains 0
    assert.equal(criterion({ cell: cell(-3, -4, -2), entry: entry('f', 1000, 100) }, down, scale).verdict, 'pass'); // above −5
    assert.equal(criterion({ cell: cell(-5, -6, -4), entry: entry('f', 1000, 100) }, down, scale).verdict, 'fail'); // reaches −5
    // The same Δ from a dense score of 55 moves toward neutral: nothing to remove.
    assert.equal(criterion({ cell: cell(-5, -6, -4), entry: entry('f', 1000, 100) }, down, { dense: 55, neutral: 50 }).verdict, 'n/a');
    // Above neutral, the signed reading is unchanged.
    assert.equal(criterion({ cell: cell(1.5, 0.5, 2.5), entry: entry('f', 1000, 100) }, plain, { dense: 52, neutral: 50 }).verdict, 'pass');
  });
  it('is n/a when the plain Δ is not significant', () => {
    assert.equal(criterion({ cell: cell(0, -1, 1), entry: entry('f', 1000, 100) }, { cell: cell(1, -0.5, 2.5), entry: entry('gptq', 1000, 100) }).verdict, 'n/a');
  });
});

describe('what each variant saw, and the overlap warning', () => {
  const scored = [{ name: 'stereoset', folder: 'stereoset' }, { name: 'crows-pairs', folder: 'crows-pairs' }];
  it('records the calibration text and pairs of a fair-gptq variant', () => {
    const calib = { file: path.join(embeddedDataDir(), 'lm_corpus', 'train.txt'), samples: 8, seqLen: 16 };
    const v = parseVariant('fair-gptq:bits=4,group_size=32,alpha=0.5,pairs=stereoset', calib, 1);
    const saw = dataSeen(v.recipe, tmp, embeddedDataDir())!;
    assert.equal(saw.calibration?.file, 'train.txt');
    assert.equal(saw.calibration?.sha256, sha256File(calib.file));
    assert.equal(saw.pairs?.[0]?.source, 'stereoset');
  });
  it('warns once when pairs come from a scored benchmark, and not otherwise', () => {
    const m = (name: string, source: string): Pick<ModelEntry, 'name' | 'saw'> => ({ name, saw: { pairs: [{ step: 1, method: 'fair-gptq', source, sha256: 'x' }] } });
    const data = '/d';
    assert.deepEqual(overlapWarnings([m('a', 'crows-pairs')], [scored[0]!], data), []);
    const w = overlapWarnings([m('a', 'stereoset')], scored, data);
    assert.equal(w.length, 1);
    assert.match(w[0]!, /^warning: a was debiased \(step 1, fair-gptq\) with pairs from stereoset .* its Δ on stereoset is not held out$/);
    assert.equal(overlapWarnings([m('b', 'shuffled:stereoset')], scored, data).length, 1);
    assert.equal(overlapWarnings([m('c', '/d/crows-pairs/my-pairs.json')], scored, data).length, 1);
    assert.equal(overlapWarnings([m('d', '/elsewhere/pairs.json')], scored, data).length, 0);
    assert.equal(overlapWarnings([{ name: 'tb', saw: { training: { testbed: 't', corpora: {}, benchmarks: ['stereoset'] } } }], scored, data).length, 1);
  });
  it('a testbed trained on one half of CrowS-Pairs is warned about on that half and on the whole, not on the other half', () => {
    const tb = [{ name: 'tb', saw: { training: { testbed: 't', corpora: {}, benchmarks: ['crows-pairs@even'] } } }];
    const data = '/d';
    const on = (name: string): number => overlapWarnings(tb, [{ name, folder: 'crows-pairs' }], data).length;
    assert.equal(on('crows-pairs'), 1);
    assert.equal(on('crows-pairs@even'), 1);
    assert.equal(on('crows-pairs@odd'), 0);
    assert.equal(on('stereoset'), 0);
    // Pairs named by a half, too.
    const m = { name: 'v', saw: { pairs: [{ step: 1, method: 'fair-gptq', source: 'crows-pairs', sha256: 'x' }] } };
    assert.equal(overlapWarnings([m], [{ name: 'crows-pairs@odd', folder: 'crows-pairs' }], data).length, 1);
  });
});

describe('benchmark halves (crows-pairs@even / @odd)', () => {
  it('the halves are the even and odd rows of the CSV, in file order, and together every pair once', () => {
    const file = path.join(embeddedDataDir(), 'crows-pairs', 'crows_pairs_anonymized.csv');
    const pairs = parseCrowsPairs(readFileSync(file, 'utf8'), file);
    const even = selectItems(pairs, { half: 'even' });
    const odd = selectItems(pairs, { half: 'odd' });
    assert.equal(even.length + odd.length, pairs.length);
    assert.equal(even[0], pairs[0]);
    assert.equal(odd[0], pairs[1]);
    assert.equal(even[5], pairs[10]);
    assert.deepEqual(selectItems(pairs, { half: 'odd', limit: 2 }), [pairs[1], pairs[3]]);
    // The testbed's training sentences are exactly the even half's (independently: every other CSV row).
    assert.deepEqual(crowsEvenSentences('more'), pairs.filter((_, i) => i % 2 === 0).map((p) => p.sentMore));
    assert.deepEqual(crowsEvenSentences('less'), pairs.filter((_, i) => i % 2 === 0).map((p) => p.sentLess));
  });

  it('a half scores exactly its items of the whole run (same outcomes, item by item)', async () => {
    const ckpt = loadCheckpoint(embeddedModelDir('dike-gpt2-mini'));
    const runner = await ModelRunner.create(ckpt, { threads: 1 });
    try {
      const ctx = { ckpt, runner, dataDir: embeddedDataDir() };
      const opts = { scorer: 'sum-ll', seed: 0, resamples: 1000, limit: 12 };
      const whole = await findBenchmark('crows-pairs')!.run(ctx, { ...opts, limit: 24 });
      const odd = await findBenchmark('crows-pairs@odd')!.run(ctx, opts);
      const even = await findBenchmark('crows-pairs@even')!.run(ctx, opts);
      const ids = (r: typeof whole): string[] => r.items!.map((i) => i.id);
      assert.deepEqual(ids(odd), ids(whole).filter((_, i) => i % 2 === 1));
      assert.deepEqual(ids(even), ids(whole).filter((_, i) => i % 2 === 0));
      assert.deepEqual(odd.items!.map((i) => i.score), whole.items!.filter((_, i) => i % 2 === 1).map((i) => i.score));
      assert.equal(findBenchmark('crows-pairs@odd')!.name, 'crows-pairs@odd');
      assert.equal(odd.benchmark, 'crows-pairs@odd');
      assert.equal(findBenchmark('crows-pairs@third'), undefined);
      assert.equal(findBenchmark('seat@odd'), undefined);
      assert.ok(benchmarkChoices().includes('crows-pairs@odd') && !benchmarkChoices().includes('seat@odd'));
    } finally {
      await runner.dispose();
    }
  });
});

describe('size and the size/quality/bias Pareto plot', () => {
  it('counts 16-bit values, b-bit codes + 32 bits per group, and pruned matrices with a mask bit', () => {
    const params = new Map([
      ['w', { shape: [4, 64], data: new Float32Array(256), dtype: 'F32' as const, file: '' }],
      ['p', { shape: [2, 8], data: new Float32Array(16), dtype: 'F32' as const, file: '' }],
      ['b', { shape: [10], data: new Float32Array(10), dtype: 'F32' as const, file: '' }],
    ]);
    assert.equal(modelSize({ params, dir: tmp }).bytes, (282 * 16) / 8);
    writeFileSync(path.join(tmp, 'compression.json'), JSON.stringify({ steps: [{ matrices: [{ weight: 'w', bits: 3, groupSize: 32 }] }, { matrices: [{ weight: 'p', sparsity: 0.5 }] }] }));
    // w: 256·3 + 8 groups·32; p: 8·16 + 16 mask bits; b: 10·16.
    assert.equal(modelSize({ params, dir: tmp }).bytes, (256 * 3 + 8 * 32 + 8 * 16 + 16 + 160) / 8);
    rmSync(path.join(tmp, 'compression.json'));
  });

  it('the three-way Pareto set is the definition (hand-worked)', () => {
    const pts = [
      { n: 'dense', size: 10, q: 100, bias: 5 }, // front: smallest quality
      { n: 'a', size: 3, q: 110, bias: 6 }, // front: smallest size
      { n: 'b', size: 3, q: 110, bias: 7 }, // dominated by a
      { n: 'c', size: 3, q: 120, bias: 1 }, // front: least bias
      { n: 'd', size: 4, q: 120, bias: 1 }, // dominated by c
      { n: 'e', size: 3, q: 110, bias: 6 }, // equal to a: front too
    ];
    assert.deepEqual(paretoSet3(pts).map((p) => p.n), ['dense', 'a', 'c', 'e']);
  });

  it('report.html draws one point per model and rings exactly the Pareto set', () => {
    const pc = (score: number): PairedCell => ({ ...cell(score - 55, -1, 1), score: { score, ci95: [score - 3, score + 3], n: 40 } });
    const mk = (name: string, bytes: number, q: number): ModelEntry => entry(name, bytes, q);
    const scores: Record<string, number> = { a: 56, b: 57, c: 51 };
    const r: AuditResults = {
      tool: 'dike', version: 't', seed: 1, resamples: 100, alpha: 0.05,
      dense: mk('dense', 10e6, 100),
      variants: [mk('a', 3e6, 110), mk('b', 3e6, 110), mk('c', 3e6, 120)],
      benchmarks: [{
        benchmark: 'crows-pairs', scorer: 'nangia-pll', metric: '%', neutral: 50,
        dense: { overall: { score: 55, ci95: [50, 60], n: 40 }, groups: {} },
        variants: Object.entries(scores).map(([n, s]) => ({ variant: n, overall: pc(s), groups: {}, flips: { total: 0, rate: 0, becameBiased: 0, becameUnbiased: 0, byGroup: [] }, exemplars: [] })),
      }],
      data: [],
      warnings: ['warning: a was debiased (step 1, fair-gptq) with pairs from stereoset (pairs=stereoset), which this audit scores: its Δ on stereoset is not held out'],
    };
    const html = renderReport(r);
    const svg = html.match(/<svg data-chart="pareto-size"[\s\S]*?<\/svg>/)?.[0];
    assert.ok(svg);
    assert.equal(svg.match(/class="mark point/g)?.length, 4);
    // dense (best quality), a (6 MB smaller than dense… 3 MB, bias 6 < b's 7), c (least bias); b is dominated by a.
    const ringed = [...svg.matchAll(/class="mark point front"[^>]*><title>([^:]+):/g)].map((m) => m[1]);
    assert.deepEqual(ringed, ['dense', 'a', 'c']);
    assert.ok(html.includes('is not held out'));
  });
});
