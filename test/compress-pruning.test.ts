/**
 * Pruning methods: magnitude (per matrix and global), N:M sparsity, attention heads, FFN neurons,
 * whole blocks.
 * Every expected mask, norm and loss here is recomputed by naive code in this file (reading the
 * stored layouts directly), never taken from the method under test.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';

import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DATA, logSoftmaxRow, maxAbsDiff, modelDir, readGolden, CLI, dike as dikeArgs, type CliRun } from './fixtures.js';
import { loadModelCached as load, removeLater, scratchDir } from './fixtures.js';
import { loadCheckpoint, type Checkpoint, type Param } from '../src/model/checkpoint.js';
import { readSafetensors } from '../src/model/safetensors.js';
import { ModelRunner, padBatch, type ModelLike } from '../src/runtime/session.js';
import { causalTokenLogprobs } from '../src/score/causal.js';
import { scoreTexts } from '../src/score/text.js';
import { applyRecipe, parseRecipe, writeCompressed, type CompressionResult, type Recipe } from '../src/compress/recipe.js';
import { sampleCalibration } from '../src/compress/calibrate.js';
import { nmPrune } from '../src/compress/methods/nm.js';
import { zeroSmallest } from '../src/compress/methods/magnitude.js';
import { DikeError } from '../src/errors.js';
import { Rng } from '../src/util/rng.js';

const CORPUS = path.join(DATA, 'lm_corpus', 'train.txt');

const tmp = (tag: string): string => scratchDir(`prune-${tag}`);

function recipeOf(steps: Record<string, unknown>[], calibration?: { samples: number; seq_len: number }): Recipe {
  return parseRecipe(JSON.stringify({ seed: 7, ...(calibration ? { calibration: { file: CORPUS, ...calibration } } : {}), steps }), 'test.json');
}

async function compress(name: string, steps: Record<string, unknown>[], calibration?: { samples: number; seq_len: number }): Promise<CompressionResult> {
  return applyRecipe(load(name), recipeOf(steps, calibration), { threads: 1 });
}

/** Element (o, i) of a weight as the math sees it (row o = output, column i = input), from storage. */
function at(p: Param, layout: 'out-in' | 'in-out', rows: number, cols: number, o: number, i: number): number {
  return layout === 'out-in' ? p.data[o * cols + i]! : p.data[i * rows + o]!;
}

/** Hidden states (every layer) of one sequence. */
async function hiddenStates(model: ModelLike, ids: readonly number[]): Promise<Float32Array[]> {
  const runner = await ModelRunner.create(model, { threads: 1 });
  try {
    return await runner.hidden(padBatch([ids], 0), Array.from({ length: model.shape.numLayers + 1 }, (_, l) => l));
  } finally {
    await runner.dispose();
  }
}

/** Logits at every position of one sequence. */
async function logitsOf(model: ModelLike, ids: readonly number[]): Promise<Float32Array> {
  const runner = await ModelRunner.create(model, { threads: 1 });
  try {
    const [last] = await runner.hidden(padBatch([ids], 0));
    return await runner.logits(last!, ids.length);
  } finally {
    await runner.dispose();
  }
}

/** The sequence the golden files run for a text (BOS-prefixed for causal models). */
function goldenIds(name: string, i: number): number[] {
  const t = readGolden(name).golden.texts[i]!;
  return t.input_ids ?? t.ids;
}

function cloneParams(params: Map<string, Param>): Map<string, Param> {
  return new Map([...params].map(([k, p]) => [k, { ...p, data: p.data.slice() }]));
}

function assertUnchangedExcept(before: Map<string, Param>, afterP: Map<string, Param>, changed: (name: string) => boolean): void {
  for (const [name, p] of before) {
    if (changed(name)) continue;
    assert.deepEqual(afterP.get(name)!.data, p.data, `${name} must be untouched`);
  }
}

// ---- magnitude --------------------------------------------------------------------------------

/**
 * The documented result, by a naive sort: of the entries of `mats` (in this order), the round(s·n) of
 * smallest |w| become 0, ties in |w| broken by position (earlier matrix, then lower index); all others
 * keep their exact value.
 */
function naiveMagnitude(mats: Float32Array[], sparsity: number): Float32Array[] {
  const entries: { m: number; i: number; a: number }[] = [];
  mats.forEach((w, m) => w.forEach((v, i) => entries.push({ m, i, a: Math.abs(v) })));
  entries.sort((x, y) => x.a - y.a || x.m - y.m || x.i - y.i);
  const out = mats.map((w) => w.slice());
  for (const e of entries.slice(0, Math.round(sparsity * entries.length))) out[e.m]![e.i] = 0;
  return out;
}

describe('magnitude: unstructured pruning (the README\'s main command)', () => {
  it('zeroes the k smallest |w|, ties to the earlier position (hand-worked)', () => {
    // |w| = 3, 1, 2, 1, 0.5, 1 → k = 3 zeroes the 0.5 (index 4) and the first two 1s (indices 1 and 3).
    const a = Float32Array.from([3, -1, 2, 1, -0.5, 1]);
    zeroSmallest([a], 3);
    assert.deepEqual([...a], [3, 0, 2, 0, 0, 1]);
    // Global: the tie at |w| = 1 goes to the earlier array first.
    const x = Float32Array.from([5, 1, 4]);
    const y = Float32Array.from([1, -1, 0.25]);
    zeroSmallest([x, y], 3);
    assert.deepEqual([[...x], [...y]], [[5, 0, 4], [0, -1, 0]]);
  });

  // tiny-gpt2 is stored in F16 and tiny-llama in BF16: thousands of exact ties in |w| at every threshold.
  const targetsOf: Record<string, RegExp> = {
    'tiny-gpt2': /^transformer\.h\.\d\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$/,
    'tiny-llama': /^model\.layers\.\d\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight$/,
  };
  for (const [name, scope, sparsity] of [['tiny-gpt2', 'per-matrix', 0.3], ['tiny-llama', 'per-matrix', 0.55], ['tiny-gpt2', 'global', 0.6], ['tiny-llama', 'global', 0.35]] as const) {
    it(`${name} ${scope} at ${sparsity}: exactly the round(s·n) smallest |w| zeroed, everything else bit-identical`, async () => {
      const ckpt = load(name);
      const res = await compress(name, [{ method: 'magnitude', sparsity, ...(scope === 'global' ? { global: true } : {}), scope: { modules: ['attention', 'ffn'] } }]);
      // The targets, from the parameter names; the reports list them in the order the method saw them
      // (used only to order ties across matrices in the global case).
      const order = res.reports[0]!.map((r) => r.weight);
      assert.deepEqual([...order].sort(), [...ckpt.params.keys()].filter((k) => targetsOf[name]!.test(k)).sort());
      const dense = order.map((w) => ckpt.params.get(w)!.data);
      const ties = dense.reduce((n, d) => n + d.length - new Set(Array.from(d, Math.abs)).size, 0);
      assert.ok(ties > 1000, `${name} has ${ties} tied magnitudes`);
      const expected = scope === 'global' ? naiveMagnitude(dense, sparsity) : dense.map((d) => naiveMagnitude([d], sparsity)[0]!);
      order.forEach((w, m) => {
        const got = res.params.get(w)!.data;
        const want = expected[m]!;
        for (let i = 0; i < want.length; i++) if (!Object.is(got[i], want[i])) assert.fail(`${w}[${i}]: ${got[i]} (dense ${dense[m]![i]}), expected ${want[i]}`);
        if (scope === 'per-matrix') assert.equal(got.filter((v) => v === 0).length, Math.max(Math.round(sparsity * got.length), dense[m]!.filter((v) => v === 0).length), w);
      });
      if (scope === 'global') {
        const n = dense.reduce((s, d) => s + d.length, 0);
        const zeros = order.reduce((s, w) => s + res.params.get(w)!.data.filter((v) => v === 0).length, 0);
        assert.equal(zeros, Math.round(sparsity * n), 'overall count of zeros');
        // One threshold: the sparsity differs from matrix to matrix.
        assert.ok(new Set(order.map((w) => res.params.get(w)!.data.filter((v) => v === 0).length / res.params.get(w)!.data.length)).size > 1);
      }
      assertUnchangedExcept(ckpt.params, res.params, (k) => order.includes(k));
    });
  }
});

// ---- N:M --------------------------------------------------------------------------------------

/** The N kept input indices of one group, by repeated maximum search (first index wins ties). */
function keptByScan(values: number[], n: number): Set<number> {
  const kept = new Set<number>();
  for (let k = 0; k < n; k++) {
    let best = -1;
    for (let i = 0; i < values.length; i++) {
      if (kept.has(i)) continue;
      if (best < 0 || Math.abs(values[i]!) > Math.abs(values[best]!)) best = i;
    }
    kept.add(best);
  }
  return kept;
}

describe('nm: semi-structured N:M sparsity', () => {
  it('keeps the top-N magnitudes of each group of M inputs (hand-computed, ties to the lower index)', () => {
    // Two rows of 8 inputs, 2:4.
    const w = Float32Array.from([0.125, -0.5, 0.375, 0.375, 1, 2, -3, 0, /* row 2 */ 0, 0, 0, 0, -1, 1, -1, 1]);
    nmPrune(w, 2, 8, 2, 4);
    assert.deepEqual(Array.from(w), [0, -0.5, 0.375, 0, 0, 2, -3, 0, /* row 2 */ 0, 0, 0, 0, -1, 1, 0, 0]);
    // 4:8 on one row.
    const v = Float32Array.from([8, -1, 7, 2, -6, 3, 5, -4]);
    nmPrune(v, 1, 8, 4, 8);
    assert.deepEqual(Array.from(v), [8, 0, 7, 0, -6, 0, 5, 0]);
  });

  for (const [name, pattern] of [['tiny-bert-mlm', '2:4'], ['tiny-gpt2', '2:4'], ['tiny-llama', '2:4'], ['tiny-llama', '4:8']] as const) {
    it(`${name} ${pattern}: every group of every target matrix holds exactly its top-N weights`, async () => {
      const ckpt = load(name);
      const [n, m] = pattern.split(':').map(Number) as [number, number];
      const res = await compress(name, [{ method: 'nm', pattern }]);
      const targets = ckpt.family.linears(ckpt.config, ckpt.task).filter((l) => l.module !== 'head');
      assert.ok(targets.length > 0);
      for (const t of targets) {
        const orig = ckpt.params.get(t.weight)!;
        const got = res.params.get(t.weight)!;
        for (let o = 0; o < t.outDim; o++) {
          for (let g = 0; g < t.inDim; g += m) {
            const group = Array.from({ length: m }, (_, j) => at(orig, t.layout, t.outDim, t.inDim, o, g + j));
            const kept = keptByScan(group, n);
            for (let j = 0; j < m; j++) {
              const v = at(got, t.layout, t.outDim, t.inDim, o, g + j);
              assert.equal(v, kept.has(j) ? group[j] : 0, `${t.weight} row ${o} input ${g + j}`);
            }
          }
        }
      }
      const report = res.reports[0]!;
      assert.equal(report.length, targets.length);
      for (const r of report) assert.equal(r.detail?.['pattern'], pattern);
      // Embeddings, norms, biases and the head are not targets.
      const names = new Set(targets.map((t) => t.weight));
      assertUnchangedExcept(ckpt.params, res.params, (k) => names.has(k));
    });
  }

  it('N = M changes nothing: logits are bitwise those of the dense model', async () => {
    const ckpt = load('tiny-gpt2');
    const res = await compress('tiny-gpt2', [{ method: 'nm', pattern: '4:4' }]);
    assertUnchangedExcept(ckpt.params, res.params, () => false);
    const ids = goldenIds('tiny-gpt2', 1);
    assert.deepEqual(await logitsOf({ ...ckpt, params: res.params }, ids), await logitsOf(ckpt, ids));
  });

  it('refuses a pattern whose M does not divide the input dimension, and a bad pattern', async () => {
    await assert.rejects(compress('tiny-bert-mlm', [{ method: 'nm', pattern: '2:7' }]), (e: unknown) => e instanceof DikeError && /not a multiple of M = 7/.test(e.message));
    assert.throws(() => recipeOf([{ method: 'nm', pattern: '5:4' }]), /0 < N ≤ M/);
    assert.throws(() => recipeOf([{ method: 'nm', pattern: '2:4', sparsity: 0.5 }]), /unknown option/);
  });
});

// ---- heads ------------------------------------------------------------------------------------

interface HeadGeometry {
  /** [weight, bias, layout, outDim, inDim, output rows of head h] for the q/k/v projections. */
  qkv: (h: number) => { weight: string; bias?: string; layout: 'out-in' | 'in-out'; rows: number; cols: number; outRows: number[] }[];
  o: { weight: string; layout: 'out-in' | 'in-out'; rows: number; cols: number };
}

const range = (start: number, n: number): number[] => Array.from({ length: n }, (_, i) => start + i);

/** Head geometry written out by hand per architecture (hidden 64, 4 heads of 16). */
function geometry(name: string, l: number): HeadGeometry {
  if (name.includes('bert')) {
    const p = `bert.encoder.layer.${l}.attention`;
    return {
      qkv: (h) => ['query', 'key', 'value'].map((x) => ({ weight: `${p}.self.${x}.weight`, bias: `${p}.self.${x}.bias`, layout: 'out-in' as const, rows: 64, cols: 64, outRows: range(16 * h, 16) })),
      o: { weight: `${p}.output.dense.weight`, layout: 'out-in', rows: 64, cols: 64 },
    };
  }
  if (name.includes('gpt2')) {
    const p = `transformer.h.${l}.attn`;
    return {
      qkv: (h) => [{ weight: `${p}.c_attn.weight`, bias: `${p}.c_attn.bias`, layout: 'in-out' as const, rows: 192, cols: 64, outRows: [...range(16 * h, 16), ...range(64 + 16 * h, 16), ...range(128 + 16 * h, 16)] }],
      o: { weight: `${p}.c_proj.weight`, layout: 'in-out', rows: 64, cols: 64 },
    };
  }
  // tiny-llama: 4 query heads, 2 KV heads (query head h reads KV head ⌊h/2⌋).
  const p = `model.layers.${l}.self_attn`;
  return {
    qkv: (h) => [
      { weight: `${p}.q_proj.weight`, layout: 'out-in' as const, rows: 64, cols: 64, outRows: range(16 * h, 16) },
      { weight: `${p}.k_proj.weight`, layout: 'out-in' as const, rows: 32, cols: 64, outRows: range(16 * Math.floor(h / 2), 16) },
      { weight: `${p}.v_proj.weight`, layout: 'out-in' as const, rows: 32, cols: 64, outRows: range(16 * Math.floor(h / 2), 16) },
    ],
    o: { weight: `${p}.o_proj.weight`, layout: 'out-in', rows: 64, cols: 64 },
  };
}

/** ‖q,k,v rows and o columns of head h‖_F from the stored weights. */
function headNorm(params: Map<string, Param>, name: string, l: number, h: number): number {
  const g = geometry(name, l);
  let s = 0;
  for (const m of g.qkv(h)) for (const r of m.outRows) for (let c = 0; c < m.cols; c++) s += at(params.get(m.weight)!, m.layout, m.rows, m.cols, r, c) ** 2;
  for (let r = 0; r < g.o.rows; r++) for (const c of range(16 * h, 16)) s += at(params.get(g.o.weight)!, g.o.layout, g.o.rows, g.o.cols, r, c) ** 2;
  return Math.sqrt(s);
}

/** Set element (o, i) of a stored weight. */
function setAt(p: Param, layout: 'out-in' | 'in-out', rows: number, cols: number, o: number, i: number, v: number): void {
  if (layout === 'out-in') p.data[o * cols + i] = v;
  else p.data[i * rows + o] = v;
}

/** The dense parameters with only the o columns of the given heads zeroed: the heads' outputs masked. */
function maskHeadOutputs(params: Map<string, Param>, name: string, heads: [number, number][]): Map<string, Param> {
  const out = cloneParams(params);
  for (const [l, h] of heads) {
    const o = geometry(name, l).o;
    for (let r = 0; r < o.rows; r++) for (const c of range(16 * h, 16)) setAt(out.get(o.weight)!, o.layout, o.rows, o.cols, r, c, 0);
  }
  return out;
}

function prunedHeadsOf(res: CompressionResult, step = 0): Map<number, number[]> {
  const out = new Map<number, number[]>();
  for (const r of res.reports[step]!) {
    const l = Number(/\.(\d+)\./.exec(r.weight)![1]);
    out.set(l, String(r.detail!['pruned_heads']).split(',').filter((s) => s !== '').map(Number));
  }
  return out;
}

describe('heads: structured attention-head pruning', () => {
  for (const name of ['tiny-bert-mlm', 'tiny-gpt2', 'tiny-llama']) {
    it(`${name}: prunes the lowest-norm head of each layer, zeroing exactly its slices`, async () => {
      const ckpt = load(name);
      const res = await compress(name, [{ method: 'heads', fraction: 0.25 }]);
      const chosen = prunedHeadsOf(res);
      const touched = new Set<string>();
      for (let l = 0; l < 2; l++) {
        const norms = range(0, 4).map((h) => headNorm(ckpt.params, name, l, h));
        const expected = norms.indexOf(Math.min(...norms));
        assert.deepEqual(chosen.get(l), [expected], `layer ${l} norms ${norms.join(', ')}`);
        const g = geometry(name, l);
        // q (and k, v for multi-head attention) rows of the head and their biases are zero; others intact.
        // Llama (GQA): only the query projection; the shared k/v heads stay.
        for (const [j, m] of g.qkv(expected).entries()) {
          const zeroRows = name !== 'tiny-llama' || j === 0 ? new Set(m.outRows) : new Set<number>();
          touched.add(m.weight);
          if (m.bias) touched.add(m.bias);
          for (let r = 0; r < m.rows; r++) {
            for (let c = 0; c < m.cols; c++) {
              const v = at(res.params.get(m.weight)!, m.layout, m.rows, m.cols, r, c);
              assert.equal(v, zeroRows.has(r) ? 0 : at(ckpt.params.get(m.weight)!, m.layout, m.rows, m.cols, r, c), `${m.weight} (${r}, ${c})`);
            }
            if (m.bias) assert.equal(res.params.get(m.bias)!.data[r], zeroRows.has(r) ? 0 : ckpt.params.get(m.bias)!.data[r]);
          }
        }
        touched.add(g.o.weight);
        for (let r = 0; r < g.o.rows; r++) {
          for (let c = 0; c < g.o.cols; c++) {
            const expectZero = c >= 16 * expected && c < 16 * (expected + 1);
            assert.equal(at(res.params.get(g.o.weight)!, g.o.layout, g.o.rows, g.o.cols, r, c), expectZero ? 0 : at(ckpt.params.get(g.o.weight)!, g.o.layout, g.o.rows, g.o.cols, r, c));
          }
        }
      }
      assertUnchangedExcept(ckpt.params, res.params, (k) => touched.has(k));

      // The pruned model computes what the dense model computes with those heads' outputs masked.
      const ids = goldenIds(name, 3);
      const masked = maskHeadOutputs(ckpt.params, name, [...chosen].map(([l, hs]) => [l, hs[0]!] as [number, number]));
      const a = await hiddenStates({ ...ckpt, params: res.params }, ids);
      const b = await hiddenStates({ ...ckpt, params: masked }, ids);
      a.forEach((x, l) => assert.ok(maxAbsDiff(x, b[l]!) <= 1e-5, `hidden.${l}: ${maxAbsDiff(x, b[l]!)}`));

      // Whatever the pruned head's own q/k/v weights are (Llama: its q rows; k/v are shared), the outputs do not change.
      const scrambled = cloneParams(res.params);
      for (const [l, hs] of chosen) {
        for (const m of geometry(name, l).qkv(hs[0]!).slice(0, name === 'tiny-llama' ? 1 : 3)) {
          for (const r of m.outRows) for (let c = 0; c < m.cols; c++) setAt(scrambled.get(m.weight)!, m.layout, m.rows, m.cols, r, c, Math.sin(7 * r + c));
        }
      }
      const s = await hiddenStates({ ...ckpt, params: scrambled }, ids);
      a.forEach((x, l) => assert.ok(maxAbsDiff(x, s[l]!) <= 1e-6, `scrambled hidden.${l}`));
    });
  }

  it('global: removes the lowest-norm heads over all layers together', async () => {
    const ckpt = load('tiny-bert-mlm');
    const res = await compress('tiny-bert-mlm', [{ method: 'heads', fraction: 0.25, global: true }]);
    const all = [0, 1].flatMap((l) => range(0, 4).map((h) => ({ l, h, n: headNorm(ckpt.params, 'tiny-bert-mlm', l, h) })));
    all.sort((x, y) => x.n - y.n);
    const expected = new Map<number, number[]>();
    for (const { l, h } of all.slice(0, 2)) expected.set(l, [...(expected.get(l) ?? []), h].sort());
    assert.deepEqual(prunedHeadsOf(res), expected);
  });

  it('GQA: pruning every query head of a group zeroes its shared key/value head too', async () => {
    const res = await compress('tiny-llama', [{ method: 'heads', count: 4, scope: { modules: ['attention'], layers: [1] } }]);
    for (const m of ['q_proj', 'k_proj', 'v_proj', 'o_proj']) {
      assert.ok(res.params.get(`model.layers.1.self_attn.${m}.weight`)!.data.every((v) => v === 0), m);
      assert.ok(res.params.get(`model.layers.0.self_attn.${m}.weight`)!.data.some((v) => v !== 0), `layer 0 ${m} outside the scope`);
    }
  });

  it('ablation (causal): importance = increase of the mean calibration NLL with the head masked', async () => {
    const name = 'tiny-gpt2';
    const ckpt = load(name);
    const cal = { samples: 3, seq_len: 12 };
    const res = await compress(name, [{ method: 'heads', fraction: 0.25, importance: 'ablation' }], cal);
    // Independent loss: sample the same sequences, mask heads by zeroing W_o columns here, average −log p.
    const seqs = sampleCalibration(ckpt, { file: CORPUS, samples: cal.samples, seqLen: cal.seq_len, seed: 7 }).sequences;
    const loss = async (params: Map<string, Param>): Promise<number> => {
      const runner = await ModelRunner.create({ ...ckpt, params }, { threads: 1 });
      const lps = await causalTokenLogprobs(runner, 50256, seqs.map((s) => ({ context: [s[0]!], ids: s.slice(1) })));
      await runner.dispose();
      let sum = 0;
      let n = 0;
      for (const lp of lps) for (const v of lp) (sum -= v), n++;
      return sum / n;
    };
    const base = await loss(ckpt.params);
    const pruned = prunedHeadsOf(res);
    for (let l = 0; l < 2; l++) {
      const report = res.reports[0]!.find((r) => r.weight === `transformer.h.${l}.attn.c_proj.weight`)!;
      assert.ok(Math.abs((report.detail!['base_loss'] as number) - base) <= 1e-6);
      const increases: number[] = [];
      for (let h = 0; h < 4; h++) {
        increases.push((await loss(maskHeadOutputs(ckpt.params, name, [[l, h]]))) - base);
        assert.ok(Math.abs((report.detail![`score_h${h}`] as number) - increases[h]!) <= 1e-6, `layer ${l} head ${h}`);
      }
      assert.deepEqual(pruned.get(l), [increases.indexOf(Math.min(...increases))]);
    }
  });

  it('ablation (masked LM): seeded, deterministic, prunes the head of least loss increase (recomputed here)', async () => {
    const name = 'tiny-bert-mlm';
    const ckpt = load(name);
    const cal = { samples: 3, seq_len: 16 };
    const run = (): Promise<CompressionResult> => compress(name, [{ method: 'heads', count: 1, importance: 'ablation', global: true }], cal);
    const [a, b] = [await run(), await run()];
    assert.deepEqual(b.reports, a.reports);
    for (const [k, p] of a.params) assert.deepEqual(b.params.get(k)!.data, p.data);

    // Independent loss, as the method documents it: the calibration sequences of the recipe's seed (7);
    // in each, max(1, round(0.15·c)) of its c non-special positions, drawn by one seeded shuffle per
    // sequence in order (the step's seed, 7), all replaced by [MASK] at once; the loss is the mean
    // −log p of the original tokens there, each sequence run alone through the full logits here.
    const tok = ckpt.tokenizer;
    const seqs = sampleCalibration(ckpt, { file: CORPUS, samples: cal.samples, seqLen: cal.seq_len, seed: 7 }).sequences;
    const rng = new Rng(7);
    const plan = seqs.flatMap((sq) => {
      const cand = sq.map((_, p) => p).filter((p) => !tok.specialIds.has(sq[p]!));
      if (cand.length === 0) return [];
      const chosen = rng.shuffle(cand).slice(0, Math.max(1, Math.round(0.15 * cand.length)));
      return [{ ids: sq.map((t, p) => (chosen.includes(p) ? tok.special.mask! : t)), chosen, targets: chosen.map((p) => sq[p]!) }];
    });
    assert.ok(plan.reduce((n, x) => n + x.chosen.length, 0) >= 3);
    const V = ckpt.shape.vocabSize;
    const loss = async (params: Map<string, Param>): Promise<number> => {
      const runner = await ModelRunner.create({ ...ckpt, params }, { threads: 1 });
      let sum = 0;
      let n = 0;
      for (const x of plan) {
        const [last] = await runner.hidden(padBatch([x.ids], 0));
        const logits = await runner.logits(last!, x.ids.length);
        x.chosen.forEach((p, j) => ((sum -= logSoftmaxRow(logits.subarray(p * V, (p + 1) * V))[x.targets[j]!]!), n++));
      }
      await runner.dispose();
      return sum / n;
    };
    const base = await loss(ckpt.params);
    const increases = new Map<string, number>();
    for (let l = 0; l < 2; l++) for (let h = 0; h < 4; h++) increases.set(`${l}/${h}`, (await loss(maskHeadOutputs(ckpt.params, name, [[l, h]]))) - base);
    const [best] = [...increases].sort((x, y) => x[1] - y[1])[0]!;
    const [bl, bh] = best.split('/').map(Number) as [number, number];
    assert.deepEqual([...prunedHeadsOf(a)], [[bl, [bh]]], `increases ${JSON.stringify(Object.fromEntries(increases))}`);
    // The reported scores of the pruned layer are those increases. Measured worst |Δ| 5.5e-7 (base loss
    // 2.1e-7): the method runs the masked rows padded together, here each alone; 5e-6 is 9× that.
    const report = a.reports[0]!.find((r) => r.weight === `bert.encoder.layer.${bl}.attention.output.dense.weight`)!;
    assert.ok(Math.abs((report.detail!['base_loss'] as number) - base) <= 5e-6, `base ${report.detail!['base_loss']} vs ${base}`);
    for (let h = 0; h < 4; h++) assert.ok(Math.abs((report.detail![`score_h${h}`] as number) - increases.get(`${bl}/${h}`)!) <= 5e-6, `layer ${bl} head ${h}`);
  });

  it('ablation refuses a classifier and a recipe without calibration text; options are validated', async () => {
    await assert.rejects(compress('tiny-bert-cls', [{ method: 'heads', fraction: 0.25, importance: 'ablation' }], { samples: 2, seq_len: 8 }), /classifier/);
    await assert.rejects(compress('tiny-gpt2', [{ method: 'heads', fraction: 0.25, importance: 'ablation' }]), /needs calibration text/);
    assert.throws(() => recipeOf([{ method: 'heads', fraction: 0.25, count: 1 }]), /exactly one of fraction or count/);
    assert.throws(() => recipeOf([{ method: 'heads', fraction: 1.5 }]), /must be in \[0, 1\]/);
    await assert.rejects(compress('tiny-gpt2', [{ method: 'heads', count: 5 }]), /5 heads requested/);
  });

  it('fraction 0 changes nothing', async () => {
    const ckpt = load('tiny-bert-mlm');
    const res = await compress('tiny-bert-mlm', [{ method: 'heads', fraction: 0 }]);
    assertUnchangedExcept(ckpt.params, res.params, () => false);
    assert.deepEqual(res.reports[0], []);
  });
});

// ---- neurons ----------------------------------------------------------------------------------

interface FfnGeometry {
  ins: { weight: string; bias?: string; layout: 'out-in' | 'in-out' }[];
  down: { weight: string; layout: 'out-in' | 'in-out' };
  width: number;
}

function ffn(name: string, l: number): FfnGeometry {
  if (name.includes('bert')) {
    const p = `bert.encoder.layer.${l}`;
    return { ins: [{ weight: `${p}.intermediate.dense.weight`, bias: `${p}.intermediate.dense.bias`, layout: 'out-in' }], down: { weight: `${p}.output.dense.weight`, layout: 'out-in' }, width: 128 };
  }
  if (name.includes('gpt2')) {
    const p = `transformer.h.${l}.mlp`;
    return { ins: [{ weight: `${p}.c_fc.weight`, bias: `${p}.c_fc.bias`, layout: 'in-out' }], down: { weight: `${p}.c_proj.weight`, layout: 'in-out' }, width: 256 };
  }
  const p = `model.layers.${l}.mlp`;
  return { ins: [{ weight: `${p}.gate_proj.weight`, layout: 'out-in' }, { weight: `${p}.up_proj.weight`, layout: 'out-in' }], down: { weight: `${p}.down_proj.weight`, layout: 'out-in' }, width: 160 };
}

describe('neurons: structured FFN-neuron pruning', () => {
  for (const [name, importance, fraction] of [['tiny-bert-mlm', 'product', 0.25], ['tiny-gpt2', 'product', 0.5], ['tiny-llama', 'norm', 0.25]] as const) {
    it(`${name} (${importance}, ${fraction}): zeroes exactly the lowest-importance neurons of each layer`, async () => {
      const ckpt = load(name);
      const res = await compress(name, [{ method: 'neurons', fraction, importance }]);
      const touched = new Set<string>();
      const probe: number[] = [];
      for (let l = 0; l < 2; l++) {
        const g = ffn(name, l);
        const H = 64;
        const score = range(0, g.width).map((i) => {
          let u = 0;
          for (const m of g.ins) for (let c = 0; c < H; c++) u += at(ckpt.params.get(m.weight)!, m.layout, g.width, H, i, c) ** 2;
          let d = 0;
          for (let r = 0; r < H; r++) d += at(ckpt.params.get(g.down.weight)!, g.down.layout, H, g.width, r, i) ** 2;
          return importance === 'product' ? Math.sqrt(u) * Math.sqrt(d) : Math.sqrt(u);
        });
        const k = Math.round(fraction * g.width);
        const order = range(0, g.width).sort((a, b) => score[a]! - score[b]! || a - b);
        const pruned = new Set(order.slice(0, k));
        probe.push(order[0]!);
        for (const m of g.ins) {
          touched.add(m.weight);
          if (m.bias) touched.add(m.bias);
          let zeroRows = 0;
          for (let i = 0; i < g.width; i++) {
            const row = range(0, H).map((c) => at(res.params.get(m.weight)!, m.layout, g.width, H, i, c));
            const orig = range(0, H).map((c) => at(ckpt.params.get(m.weight)!, m.layout, g.width, H, i, c));
            assert.deepEqual(row, pruned.has(i) ? orig.map(() => 0) : orig, `${m.weight} row ${i}`);
            if (row.every((v) => v === 0)) zeroRows++;
            if (m.bias) assert.equal(res.params.get(m.bias)!.data[i], pruned.has(i) ? 0 : ckpt.params.get(m.bias)!.data[i]);
          }
          assert.equal(zeroRows, k, 'exactly the requested fraction of neurons');
        }
        touched.add(g.down.weight);
        for (let r = 0; r < H; r++) {
          for (let i = 0; i < g.width; i++) {
            assert.equal(at(res.params.get(g.down.weight)!, g.down.layout, H, g.width, r, i), pruned.has(i) ? 0 : at(ckpt.params.get(g.down.weight)!, g.down.layout, H, g.width, r, i));
          }
        }
      }
      assertUnchangedExcept(ckpt.params, res.params, (n) => touched.has(n));
      // A pruned neuron's incoming weights no longer matter.
      const scrambled = cloneParams(res.params);
      probe.forEach((i, l) => {
        for (const m of ffn(name, l).ins) for (let c = 0; c < 64; c++) setAt(scrambled.get(m.weight)!, m.layout, ffn(name, l).width, 64, i, c, Math.cos(3 * c + l));
      });
      const ids = goldenIds(name, 2);
      assert.ok(maxAbsDiff(await logitsOf({ ...ckpt, params: scrambled }, ids), await logitsOf({ ...ckpt, params: res.params }, ids)) <= 1e-6);
    });
  }

  it('fraction 0 changes nothing', async () => {
    const ckpt = load('tiny-llama');
    const res = await compress('tiny-llama', [{ method: 'neurons', fraction: 0 }]);
    assertUnchangedExcept(ckpt.params, res.params, () => false);
  });
});

// ---- layers -----------------------------------------------------------------------------------

/** Write a compression result and load it back as a checkpoint. */
function roundTrip(name: string, res: CompressionResult, steps: Record<string, unknown>[]): { dir: string; ckpt: Checkpoint } {
  const dir = path.join(tmp(name), 'out');
  writeCompressed(load(name), res, recipeOf(steps), dir);
  return { dir, ckpt: loadCheckpoint(dir) };
}

function fileBytes(dir: string): number {
  const files = ['model.safetensors', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'];
  return files.reduce((s, f) => s + (statSync(path.join(dir, f), { throwIfNoEntry: false })?.size ?? 0), 0);
}

/** Pre-LN residual blocks (GPT-2, Llama) become the identity when their two output projections are zero. */
function skipBlocks(name: string, params: Map<string, Param>, blocks: number[]): Map<string, Param> {
  const out = cloneParams(params);
  const outputs = name.includes('gpt2') ? ['attn.c_proj.weight', 'attn.c_proj.bias', 'mlp.c_proj.weight', 'mlp.c_proj.bias'] : ['self_attn.o_proj.weight', 'mlp.down_proj.weight'];
  const prefix = name.includes('gpt2') ? 'transformer.h' : 'model.layers';
  for (const l of blocks) for (const o of outputs) out.get(`${prefix}.${l}.${o}`)!.data.fill(0);
  return out;
}

describe('layers: whole-block removal', () => {
  it('tiny-bert-mlm, remove the top block: hidden.0…L−1 unchanged, head on the last kept block', async () => {
    const name = 'tiny-bert-mlm';
    const dense = load(name);
    const steps = [{ method: 'layers', remove: 1 }];
    const res = await compress(name, steps);
    const { dir, ckpt } = roundTrip(name, res, steps);
    assert.equal(ckpt.shape.numLayers, 1);
    assert.equal(JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8')).num_hidden_layers, 1);
    assert.ok(![...ckpt.params.keys()].some((k) => k.startsWith('bert.encoder.layer.1.')));
    assert.equal(ckpt.params.size, dense.params.size - [...dense.params.keys()].filter((k) => k.startsWith('bert.encoder.layer.1.')).length);
    assert.ok(fileBytes(dir) < fileBytes(dense.dir));
    const ids = goldenIds(name, 3);
    const [h, d] = [await hiddenStates(ckpt, ids), await hiddenStates(dense, ids)];
    assert.equal(h.length, 2);
    for (const l of [0, 1]) assert.ok(maxAbsDiff(h[l]!, d[l]!) <= 1e-6, `hidden.${l}`);
    // Logits: the MLM head applied to the dense model's hidden.1.
    const runner = await ModelRunner.create(dense, { threads: 1 });
    const expected = await runner.logits(d[1]!, ids.length);
    await runner.dispose();
    assert.ok(maxAbsDiff(await logitsOf(ckpt, ids), expected) <= 1e-5);
    const record = JSON.parse(readFileSync(path.join(dir, 'compression.json'), 'utf8'));
    assert.equal(record.steps[0].matrices[0].detail.removed_block, 1);
  });

  for (const [name, removal] of [
    ['tiny-gpt2', { remove: 1 }],
    ['tiny-gpt2', { indices: [0] }],
    ['tiny-llama', { remove: 1 }],
    ['tiny-llama', { indices: '0' }],
  ] as const) {
    it(`${name} ${JSON.stringify(removal)}: a smaller model equal to the dense one with that block skipped`, async () => {
      const dense = load(name);
      const steps = [{ method: 'layers', ...removal }];
      const res = await compress(name, steps);
      const { dir, ckpt } = roundTrip(name, res, steps);
      const removed = 'remove' in removal ? 1 : 0;
      const kept = 1 - removed;
      const prefix = name === 'tiny-gpt2' ? 'transformer.h' : 'model.layers';
      const config = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8'));
      assert.equal(config[name === 'tiny-gpt2' ? 'n_layer' : 'num_hidden_layers'], 1);
      assert.equal(ckpt.shape.numLayers, 1);
      // The kept block is now block 0, bit for bit, in its original dtype; nothing of block 1 remains.
      const st = readSafetensors(path.join(dir, 'model.safetensors'));
      for (const [k, p] of dense.params) {
        if (!k.startsWith(`${prefix}.${kept}.`)) continue;
        const moved = k.replace(`${prefix}.${kept}.`, `${prefix}.0.`);
        assert.deepEqual(ckpt.params.get(moved)!.data, p.data, moved);
        assert.equal(st.tensors.get(moved)!.dtype, p.dtype);
      }
      assert.ok(![...ckpt.params.keys()].some((k) => k.startsWith(`${prefix}.1.`)));
      assert.ok(fileBytes(dir) < fileBytes(dense.dir));
      // Same numbers as the dense architecture with the removed block turned into the identity.
      const skip = { ...dense, params: skipBlocks(name, dense.params, [removed]) };
      const ids = goldenIds(name, 3);
      const [h, s] = [await hiddenStates(ckpt, ids), await hiddenStates(skip, ids)];
      assert.ok(maxAbsDiff(h[0]!, s[0]!) <= 1e-6, 'embeddings');
      assert.ok(maxAbsDiff(h[1]!, s[2]!) <= 1e-5, `final hidden state: ${maxAbsDiff(h[1]!, s[2]!)}`);
      const texts = readGolden(name).golden.texts.map((t) => t.text);
      const r1 = await ModelRunner.create(ckpt, { threads: 1 });
      const r2 = await ModelRunner.create(skip, { threads: 1 });
      const [a, b] = [await scoreTexts(ckpt, r1, texts), await scoreTexts(dense, r2, texts)];
      await r1.dispose();
      await r2.dispose();
      a.forEach((x, i) => assert.ok(maxAbsDiff(x.logprobs, b[i]!.logprobs) <= 1e-4, `text ${i}`));
    });
  }

  it('later steps see the smaller model; bad removals are refused', async () => {
    const res = await compress('tiny-gpt2', [{ method: 'layers', remove: 1 }, { method: 'nm', pattern: '2:4' }]);
    assert.deepEqual(res.reports[1]!.map((r) => r.weight).sort(), ['transformer.h.0.attn.c_attn.weight', 'transformer.h.0.attn.c_proj.weight', 'transformer.h.0.mlp.c_fc.weight', 'transformer.h.0.mlp.c_proj.weight']);
    assert.equal(res.config?.['n_layer'], 1);
    await assert.rejects(compress('tiny-gpt2', [{ method: 'layers', remove: 2 }]), /leaves none/);
    await assert.rejects(compress('tiny-llama', [{ method: 'layers', indices: [3] }]), /block 3 does not exist/);
    assert.throws(() => recipeOf([{ method: 'layers', remove: 1, indices: [0] }]), /exactly one of remove/);
    assert.throws(() => recipeOf([{ method: 'layers', indices: [1, 1] }]), /repeated block index/);
  });
});

// ---- command line and determinism --------------------------------------------------------------

const dike = (...args: string[]): CliRun => dikeArgs(args);

describe('dike compress with the pruning methods', () => {
  let dir: string;
  before(() => {
    dir = tmp('cli');
  });

  it('nm 2:4 round trip: the written model loads, keeps the pattern and scores text', async () => {
    const out = path.join(dir, 'gpt2-nm');
    const r = dike('compress', modelDir('tiny-gpt2'), '--method', 'nm', '--pattern', '2:4', '--threads', '1', '--out', out);
    assert.equal(r.code, 0, r.stderr);
    const ckpt = loadCheckpoint(out);
    const w = ckpt.params.get('transformer.h.1.mlp.c_proj.weight')!; // Conv1D [in 256, out 64]
    for (let o = 0; o < 64; o++) for (let g = 0; g < 256; g += 4) assert.ok(range(g, 4).filter((i) => w.data[i * 64 + o] !== 0).length <= 2);
    const runner = await ModelRunner.create(ckpt, { threads: 1 });
    const scores = await scoreTexts(ckpt, runner, ['The nurse said that he was tired.']);
    await runner.dispose();
    assert.ok(scores[0]!.logprobs.length > 0 && scores[0]!.logprobs.every((v) => Number.isFinite(v) && v < 0));
    const record = JSON.parse(readFileSync(path.join(out, 'compression.json'), 'utf8'));
    assert.equal(record.recipe.steps[0].method, 'nm');
    assert.equal(record.steps[0].matrices[0].detail.pattern, '2:4');
  });

  it('layer removal through the CLI: the result works with dike logprobs and dike inspect', () => {
    const out = path.join(dir, 'bert-layers');
    const r = dike('compress', modelDir('tiny-bert-mlm'), '--method', 'layers', '--opt', 'remove=1', '--out', out);
    assert.equal(r.code, 0, r.stderr);
    const lp = dike('logprobs', out, '--json', '--text', 'The nurse said that he was tired.');
    assert.equal(lp.code, 0, lp.stderr);
    assert.ok(Number.isFinite(JSON.parse(lp.stdout)[0].total));
    const info = dike('inspect', out, '--json');
    assert.equal(info.code, 0, info.stderr);
    assert.equal(JSON.parse(info.stdout).shape.numLayers, 1);
  });

  it('same seed and inputs give a byte-identical model.safetensors', async () => {
    for (const [name, steps, cal] of [
      ['tiny-llama', [{ method: 'nm', pattern: '2:4' }, { method: 'neurons', fraction: 0.3 }, { method: 'layers', indices: [0] }], undefined],
      ['tiny-gpt2', [{ method: 'heads', fraction: 0.5, importance: 'ablation', global: true }], { samples: 2, seq_len: 8 }],
    ] as const) {
      const bytes = [0, 1].map((k) => {
        const out = path.join(dir, `det-${name}-${k}`);
        return out;
      });
      for (const out of bytes) {
        const s = steps as unknown as Record<string, unknown>[];
        const res = await compress(name, s, cal);
        writeCompressed(load(name), res, recipeOf(s, cal), out);
      }
      assert.ok(readFileSync(path.join(bytes[0]!, 'model.safetensors')).equals(readFileSync(path.join(bytes[1]!, 'model.safetensors'))), name);
    }
  });
});
