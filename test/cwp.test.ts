/**
 * Critical Weight Protection (compress/methods/cwp.ts) and its fairness saliency (locate/saliency.ts).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { loadCheckpoint } from '../src/model/checkpoint.js';
import { readSafetensors, toFloat32, writeSafetensors, type RawTensor } from '../src/model/safetensors.js';
import { crowsPairs } from '../src/measure/crows-pairs.js';
import { sentencePairs } from '../src/measure/pairs.js';
import { ModelRunner } from '../src/runtime/session.js';
import { pairItems, squaredGradientSaliency } from '../src/locate/saliency.js';
import { quantizeRtnProtected, topK } from '../src/compress/methods/cwp.js';
import { grid, quantizeRtn } from '../src/compress/quantizer.js';
import { Rng } from '../src/util/rng.js';
import { assertOneLineError, dike, modelDir, repoRoot, scratchDir } from './fixtures.js';

const TINY = modelDir('tiny-bert-mlm');
const MINI = path.join(repoRoot(), 'models', 'dike-bert-mini');
const DATA = path.join(repoRoot(), 'data');

test('saliency = mean over pairs of the squared per-pair gradient (central finite differences of each pair\'s CrowS score)', async () => {
  const ck = loadCheckpoint(MINI);
  const n = 3;
  // crows-pairs as sentence pairs: (stereotype, anti-stereotype) = ±(sent_more, sent_less), so each
  // item objective is ± the benchmark's item score and its squared gradient is the same.
  const items = pairItems(ck, sentencePairs(DATA, { source: 'crows-pairs', limit: n }), 'nangia-pll');
  const w = 'bert.encoder.layer.1.output.dense.weight';
  const sal = (await squaredGradientSaliency(ck, items, [w], { threads: 2, padId: 0 })).scores.get(w)!;
  // The three entries with the largest saliency (largest signal against float32 scoring noise).
  const order = Array.from(sal.keys()).sort((a, b) => sal[b]! - sal[a]!);
  const entries = order.slice(0, 3);
  const scores = async (j: number, delta: number): Promise<number[]> => {
    const p = ck.params.get(w)!;
    const data = p.data.slice();
    data[j] = Math.fround(data[j]! + delta);
    const m = { ...ck, params: new Map(ck.params).set(w, { ...p, data }) };
    const r = await ModelRunner.create(m, { threads: 2 });
    try {
      return (await crowsPairs.run({ ckpt: m, runner: r, dataDir: DATA }, { scorer: 'nangia-pll', seed: 0, resamples: 1000, limit: n })).items.map((i) => i.score);
    } finally {
      await r.dispose();
    }
  };
  const eps = 0.01;
  let gap = 0;
  for (const j of entries) {
    const p = ck.params.get(w)!.data[j]!;
    const hi = Math.fround(p + eps) - p;
    const lo = Math.fround(p - eps) - p;
    const up = await scores(j, eps);
    const down = await scores(j, -eps);
    // Σ_i (∂d_i/∂w)² / n, each ∂d_i by a central difference over the exact float32 step.
    const gi = up.map((u, i) => (u - down[i]!) / (hi - lo));
    const fd = gi.reduce((s, g) => s + g * g, 0) / n;
    // The square of the summed gradient, (Σ_i g_i)² / n, is not what the paper's code accumulates.
    const squaredSum = gi.reduce((s, g) => s + g, 0) ** 2 / n;
    if (process.env['CWP_DEBUG']) console.log(j, sal[j], fd, squaredSum, Math.abs(sal[j]! - fd) / fd);
    gap = Math.max(gap, Math.abs(squaredSum - fd) / fd);
    // Float32 scoring noise and curvature (measured 2.8e-4, 7.8e-4, 1.9e-3; eps = 0.003 is noisier: 8.8e-3).
    assert.ok(Math.abs(sal[j]! - fd) / fd < 5e-3, `entry ${j}: saliency ${sal[j]} vs finite differences ${fd}`);
  }
  // The test tells the two aggregations apart (measured gap 3.0%, above the 0.5% tolerance).
  assert.ok(gap > 0.02, `per-pair and summed squares differ by only ${gap}`);
});

test('topK: the k largest scores over all matrices, ties by matrix order then index (hand-made table)', () => {
  const t = [Float64Array.from([0.5, 0.1, 0.9]), Float64Array.from([0.9, 0.2])];
  assert.deepEqual(topK(t, 2).map((m) => [...m]), [[0, 0, 1], [1, 0]]);
  assert.deepEqual(topK(t, 3).map((m) => [...m]), [[1, 0, 1], [1, 0]]);
  assert.deepEqual(topK(t, 0).map((m) => [...m]), [[0, 0, 0], [0, 0]]);
  const ties = [Float64Array.from([1, 2, 1]), Float64Array.from([1])];
  assert.deepEqual(topK(ties, 2).map((m) => [...m]), [[1, 1, 0], [0]]);
  assert.deepEqual(topK(ties, 3).map((m) => [...m]), [[1, 1, 1], [0]]);
});

test('protected weights are unchanged; every other group equals plain RTN of its unprotected values', () => {
  const rng = new Rng(7);
  const rows = 6;
  const cols = 40; // groups of 16: 16, 16, 8 (a short last group)
  const w = Float32Array.from({ length: rows * cols }, () => Math.fround((rng.next() - 0.5) * (rng.next() < 0.05 ? 20 : 1)));
  const keep = Uint8Array.from({ length: rows * cols }, () => (rng.next() < 0.2 ? 1 : 0));
  keep.fill(1, 2 * cols + 16, 2 * cols + 32); // one group all protected
  for (const symmetric of [true, false]) {
    const g = grid(4, symmetric);
    const out = w.slice();
    quantizeRtnProtected(g, out, keep, rows, cols, 16);
    let changed = 0;
    for (let r = 0; r < rows; r++) {
      for (let c0 = 0; c0 < cols; c0 += 16) {
        const idx = Array.from({ length: Math.min(16, cols - c0) }, (_, k) => r * cols + c0 + k);
        const free = idx.filter((i) => keep[i] === 0);
        for (const i of idx) if (keep[i] === 1) assert.equal(out[i], w[i], `protected entry ${i} moved`);
        if (free.length === 0) continue;
        // Reference: the existing RTN on a one-row matrix holding only the unprotected values.
        const ref = Float32Array.from(free.map((i) => w[i]!));
        quantizeRtn(g, ref, 1, ref.length, -1);
        free.forEach((i, k) => {
          assert.equal(out[i], ref[k], `entry ${i}`);
          if (out[i] !== w[i]) changed++;
        });
      }
    }
    assert.ok(changed > 100, 'the unprotected weights were quantized');
  }
});

test('dike compress --method cwp: the top fraction by saliency kept exactly, counts and effective bits in compression.json; controls protect as many', () => {
  const dir = scratchDir('cwp');
  const ck = loadCheckpoint(TINY);
  const linears = ck.family.linears(ck.config, ck.task).filter((l) => l.module !== 'head');
  // A hand-made saliency: each weight's score is its index within the matrix, plus 1e6 in one matrix,
  // so the protected set is known in advance: the last k entries of that matrix.
  const hot = 'bert.encoder.layer.0.attention.self.value.weight';
  const tensors: [string, RawTensor][] = ck.family.linears(ck.config, ck.task).map((l) => {
    const p = ck.params.get(l.weight)!;
    const f = Float32Array.from(p.data, (_, i) => i + (l.weight === hot ? 1e6 : 0));
    return [l.weight, { dtype: 'F32', shape: p.shape, bytes: new Uint8Array(f.buffer) }];
  });
  const file = path.join(dir, 'sal.safetensors');
  writeSafetensors(file, tensors);
  const total = linears.reduce((s, l) => s + ck.params.get(l.weight)!.data.length, 0);
  const protect = 0.01;
  const k = Math.round(protect * total);
  const out = path.join(dir, 'out');
  const r = dike(['compress', TINY, '--method', 'cwp', '--bits', '4', '--group-size', '32', '--opt', `saliency=${file}`, '--opt', `protect=${protect}`, '--out', out]);
  assert.equal(r.code, 0, r.stderr);
  const after = readSafetensors(path.join(out, 'model.safetensors')).tensors;
  const before = ck.params.get(hot)!.data;
  const hotAfter = toFloat32(after.get(hot)!);
  for (let i = before.length - k; i < before.length; i++) assert.equal(hotAfter[i], before[i], `protected entry ${i}`);
  let moved = 0;
  for (let i = 0; i < before.length - k; i++) if (hotAfter[i] !== before[i]) moved++;
  assert.ok(moved > (before.length - k) / 2, 'the rest was quantized');
  const rec = JSON.parse(readFileSync(path.join(out, 'compression.json'), 'utf8'));
  const mats = rec.steps[0].matrices as { weight: string; detail: { protected: number; effective_bits: number } }[];
  assert.equal(mats.reduce((s, m) => s + m.detail.protected, 0), k);
  const hotRep = mats.find((m) => m.weight === hot)!;
  assert.equal(hotRep.detail.protected, k);
  assert.equal(hotRep.detail.effective_bits, 4 + (k / before.length) * 64);
  for (const by of ['magnitude', 'random']) {
    const o = path.join(dir, by);
    const c = dike(['compress', TINY, '--method', 'cwp', '--bits', '4', '--group-size', '32', '--opt', `protect_by=${by}`, '--opt', `protect=${protect}`, '--out', o]);
    assert.equal(c.code, 0, c.stderr);
    const m = JSON.parse(readFileSync(path.join(o, 'compression.json'), 'utf8')).steps[0].matrices as { detail: { protected: number } }[];
    assert.equal(m.reduce((s, x) => s + x.detail.protected, 0), k, by);
  }
});

test('bad saliency files: missing tensor, wrong shape, non-finite score → one line naming the file and tensor', () => {
  const dir = scratchDir('cwp-bad');
  const ck = loadCheckpoint(TINY);
  const all = ck.family.linears(ck.config, ck.task).map((l) => l.weight);
  const write = (name: string, edit: (k: string, f: Float32Array, shape: number[]) => [string, RawTensor] | undefined): string => {
    const file = path.join(dir, name);
    const ts: [string, RawTensor][] = [];
    for (const k of all) {
      const p = ck.params.get(k)!;
      const t = edit(k, new Float32Array(p.data.length).fill(1), p.shape);
      if (t) ts.push(t);
    }
    writeSafetensors(file, ts);
    return file;
  };
  const victim = 'bert.encoder.layer.1.attention.self.query.weight';
  const plain = (k: string, f: Float32Array, shape: number[]): [string, RawTensor] => [k, { dtype: 'F32', shape, bytes: new Uint8Array(f.buffer) }];
  const missing = write('missing.safetensors', (k, f, s) => (k === victim ? undefined : plain(k, f, s)));
  const shape = write('shape.safetensors', (k, f, s) => plain(k, f, k === victim ? [s[0]! / 2, s[1]! * 2] : s));
  const nan = write('nan.safetensors', (k, f, s) => {
    if (k === victim) f[5] = NaN;
    return plain(k, f, s);
  });
  const run = (file: string) => dike(['compress', TINY, '--method', 'cwp', '--bits', '4', '--opt', `saliency=${file}`, '--out', path.join(dir, path.basename(file) + '.out')]);
  assertOneLineError(run(missing), 'missing.safetensors', victim, 'missing');
  assertOneLineError(run(shape), 'shape.safetensors', victim, 'shape');
  assertOneLineError(run(nan), 'nan.safetensors', victim, 'entry 5', 'NaN');
  assertOneLineError(run(path.join(dir, 'absent.safetensors')), 'absent.safetensors');
  assertOneLineError(dike(['compress', TINY, '--method', 'cwp', '--bits', '4', '--out', path.join(dir, 'x')]), 'saliency', 'required');
  assertOneLineError(dike(['saliency', '--model', TINY, '--pairs', path.join(dir, 'no-pairs.json'), '--out', path.join(dir, 's.safetensors')]), 'no-pairs.json', 'not found');
  assertOneLineError(dike(['saliency', '--model', TINY, '--scorer', 'sum-ll', '--out', path.join(dir, 's.safetensors')]), '--scorer', 'masked-lm');
  assertOneLineError(dike(['compress', TINY, '--method', 'cwp', '--bits', '4', '--opt', 'protect_by=random', '--opt', 'base=gptq', '--out', path.join(dir, 'y')]), 'base', 'only base=rtn');
});

test('audit --variant cwp:…: the variant is keyed by the saliency file\'s content (same path, new scores → recompressed)', () => {
  const dir = scratchDir('cwp-audit');
  const ck = loadCheckpoint(TINY);
  const file = path.join(dir, 'sal.safetensors');
  const writeScores = (reverse: boolean): void => {
    writeSafetensors(file, ck.family.linears(ck.config, ck.task).map((l): [string, RawTensor] => {
      const p = ck.params.get(l.weight)!;
      const f = Float32Array.from(p.data, (_, i) => (reverse ? p.data.length - i : i));
      return [l.weight, { dtype: 'F32', shape: p.shape, bytes: new Uint8Array(f.buffer) }];
    }));
  };
  const audit = (): string => {
    const r = dike(['audit', '--model', TINY, '--variant', `cwp:bits=4,group_size=32,protect=0.05,saliency=${file}`, '--data', DATA, '--limit', '4', '--quality-lines', '0', '--threads', '1', '--out', path.join(dir, 'out'), '--json', '--quiet']);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout).variants[0].weightsSha256 as string;
  };
  writeScores(false);
  const first = audit();
  assert.equal(audit(), first, 'unchanged file: the finished variant is reused');
  writeScores(true);
  assert.notEqual(audit(), first, 'new scores at the same path: recompressed');
});
