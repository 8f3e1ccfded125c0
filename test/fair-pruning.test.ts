/**
 * Bias-aware pruning (issue 16). Every expected value is computed here by naive float64 code from
 * explicit token matrices (X, X0, X1), by hand, or by the plain method the fair one must reduce to;
 * nothing is taken from the method under test.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { DATA, loadModelCached as load } from './fixtures.js';
import type { LinearInfo } from '../src/model/arch/types.js';
import { applyRecipe, parseRecipe } from '../src/compress/recipe.js';
import { Gemm } from '../src/compress/gemm.js';
import { sparseGptMatrix } from '../src/compress/methods/sparsegpt.js';
import { fairSparseGptMatrix } from '../src/compress/methods/fair-sparsegpt.js';
import { fairWandaScores, rowMask } from '../src/compress/methods/fair-wanda.js';
import { fairGptq, pairCalibration } from '../src/compress/methods/fair-gptq.js';
import { sentencePairs } from '../src/measure/pairs.js';
import type { PairSource } from '../src/compress/types.js';
import { DikeError } from '../src/errors.js';
import { selectFairHeads, selectFasp } from '../src/compress/methods/fair-heads.js';
import { scoreTexts } from '../src/score/text.js';
import { ModelRunner } from '../src/runtime/session.js';
import type { Param } from '../src/model/checkpoint.js';
import path from 'node:path';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { allocateBits, bySensitivity } from '../src/compress/methods/mixed-precision.js';

const CORPUS_FILE = path.join(DATA, 'lm_corpus', 'train.txt');

const pairs: PairSource = (req) => sentencePairs(DATA, req);
const gemm = new Gemm(1);
after(() => gemm.dispose());

/** A seeded uniform(−½, ½) stream (LCG), independent of the code under test. */
function lcg(seed: number): () => number {
  let s = seed;
  return () => ((s = (s * 1103515245 + 12345) % 2147483648), s / 2147483648 - 0.5);
}

/** A tiny layer: W [rows, cols], calibration tokens X (cols × n), and P pairs of aligned tokens X0, X1. */
function tinyCase(seed: number, rows: number, cols: number, n: number, P: number) {
  const rnd = lcg(seed);
  const X = Array.from({ length: n }, () => Array.from({ length: cols }, rnd));
  for (const x of X) for (let j = 1; j < cols; j++) x[j]! += 0.7 * x[j - 1]!; // correlated inputs
  const X0 = Array.from({ length: P }, () => Array.from({ length: cols }, rnd));
  // The pair's second sentence: the first one moved along a fixed "group" direction (plus noise).
  const dir = Array.from({ length: cols }, rnd);
  const X1 = X0.map((x) => x.map((v, j) => v + 1.5 * dir[j]! + 0.1 * rnd()));
  const W = Array.from({ length: rows * cols }, rnd);
  const gramOf = (vs: number[][]): Float64Array => {
    const g = new Float64Array(cols * cols);
    for (const v of vs) for (let i = 0; i < cols; i++) for (let j = 0; j < cols; j++) g[i * cols + j]! += v[i]! * v[j]!;
    return g;
  };
  const deltas = X0.map((x, p) => x.map((v, j) => v - X1[p]![j]!));
  return { X, X0, X1, deltas, W, G: gramOf(X), D: gramOf(deltas), rows, cols, n };
}

/** F(Ŵ) = ‖(W − Ŵ)X‖² + 2α‖ŴΔ‖², from the token vectors themselves. */
function objective(c: ReturnType<typeof tinyCase>, What: ArrayLike<number>, alpha: number): { rec: number; bias: number; F: number } {
  let rec = 0;
  for (const x of c.X) for (let r = 0; r < c.rows; r++) {
    let y = 0;
    for (let j = 0; j < c.cols; j++) y += (c.W[r * c.cols + j]! - What[r * c.cols + j]!) * x[j]!;
    rec += y * y;
  }
  let bias = 0;
  for (const d of c.deltas) for (let r = 0; r < c.rows; r++) {
    let y = 0;
    for (let j = 0; j < c.cols; j++) y += What[r * c.cols + j]! * d[j]!;
    bias += y * y;
  }
  return { rec, bias, F: rec + 2 * alpha * bias };
}

/** Inverse of a symmetric positive-definite matrix (array of rows) by Gauss–Jordan elimination. */
function inverse(A: number[][]): number[][] {
  const n = A.length;
  const a = A.map((r, i) => [...r, ...Array.from({ length: n }, (_, c) => (c === i ? 1 : 0))]);
  for (let c = 0; c < n; c++) {
    const p = a[c]![c]!;
    for (let k = 0; k < 2 * n; k++) a[c]![k]! /= p;
    for (let r = 0; r < n; r++) if (r !== c) {
      const f = a[r]![c]!;
      for (let k = 0; k < 2 * n; k++) a[r]![k]! -= f * a[c]![k]!;
    }
  }
  return a.map((r) => r.slice(n));
}

/**
 * Fair SparseGPT written from its derivation, with explicit inverses (no Cholesky, no lazy batches):
 * H = 2G/n, Hx = 4αD/n, H₂ = H + Hx, λ = frac·mean diag H₂; W* = W·(H + λI)·(H₂ + λI)⁻¹; then the
 * paper's OBS recursion on W* with H₂ + λI: per block of Bs columns the share of smallest
 * w² / [H₂[c:, c:]⁻¹]₀₀, and pruning column j moves the row by −w_j / [Hj⁻¹]₀₀ · Hj⁻¹[0, :].
 */
function naiveFairSparseGpt(c: ReturnType<typeof tinyCase>, alpha: number, sparsity: number, Bs: number, frac: number): number[] {
  const { rows, cols, n } = c;
  const H = Array.from({ length: cols }, (_, i) => Array.from({ length: cols }, (_, j) => (2 * c.G[i * cols + j]!) / n));
  const H2 = H.map((r, i) => r.map((v, j) => v + (4 * alpha * c.D[i * cols + j]!) / n));
  const lambda = (frac * H2.reduce((s, r, i) => s + r[i]!, 0)) / cols;
  for (let i = 0; i < cols; i++) {
    H[i]![i]! += lambda;
    H2[i]![i]! += lambda;
  }
  const H2inv = inverse(H2);
  const w: number[] = [];
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < cols; j++) {
      let v = 0;
      for (let a = 0; a < cols; a++) for (let b = 0; b < cols; b++) v += c.W[r * cols + a]! * H[a]![b]! * H2inv[b]![j]!;
      w.push(v);
    }
  }
  const inv = Array.from({ length: cols }, (_, j) => inverse(H2.slice(j).map((r) => r.slice(j))));
  const pruned = new Set<number>();
  for (let j = 0; j < cols; j++) {
    if (j % Bs === 0) {
      const cand: [number, number][] = [];
      for (let r = 0; r < rows; r++) for (let k = j; k < Math.min(j + Bs, cols); k++) cand.push([w[r * cols + k]! ** 2 / inv[k]![0]![0]!, r * cols + k]);
      cand.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
      const k = Math.round(sparsity * rows * Math.min(j + Bs, cols)) - Math.round(sparsity * rows * j);
      for (let t = 0; t < k; t++) pruned.add(cand[t]![1]);
    }
    for (let r = 0; r < rows; r++) {
      if (!pruned.has(r * cols + j)) continue;
      const f = w[r * cols + j]! / inv[j]![0]![0]!;
      for (let k = j; k < cols; k++) w[r * cols + k]! -= f * inv[j]![0]![k - j]!;
      w[r * cols + j] = 0;
    }
  }
  return w;
}

describe('fair-sparsegpt on one matrix', () => {
  const c = tinyCase(11, 4, 10, 40, 6);
  const opts = { sparsity: 0.5, blockSize: 128, maskBlockSize: 5, dampeningFrac: 0.01 };

  it('α = 0 is SparseGPT exactly (bit for bit), whatever the pair statistics', async () => {
    const fair = await fairSparseGptMatrix(gemm, c.W, c.rows, c.cols, c.G, c.D, c.n, 0, opts);
    const plain = sparseGptMatrix(c.W, c.rows, c.cols, c.G, c.n, opts);
    assert.deepEqual([...fair.weights], [...plain.weights]);
  });

  for (const alpha of [0.5, 5]) {
    it(`α = ${alpha}: equals the derivation with explicit inverses (target W·H·H₂⁻¹, OBS on H₂), and its reported terms the token-level objective`, async () => {
      const expected = naiveFairSparseGpt(c, alpha, 0.5, 5, 0.01);
      for (const B of [1, 5, 10, 128]) {
        const r = await fairSparseGptMatrix(gemm, c.W, c.rows, c.cols, c.G, c.D, c.n, alpha, { ...opts, blockSize: B, maskBlockSize: 5 });
        for (let i = 0; i < expected.length; i++) assert.ok(Math.abs(r.weights[i]! - expected[i]!) < 1e-9, `B = ${B}: w[${i}] = ${r.weights[i]}, expected ${expected[i]}`);
        const o = objective(c, r.weights, alpha);
        assert.ok(Math.abs(r.reconstruction - o.rec) <= 1e-9 * o.rec, `reconstruction ${r.reconstruction} vs ${o.rec}`);
        assert.ok(Math.abs(r.bias - o.bias) <= 1e-9 * o.bias, `bias ${r.bias} vs ${o.bias}`);
      }
    });
  }

  it('at sparsity 0 the result is the dense minimiser of F: the gradient of the (dampened) objective vanishes', async () => {
    const alpha = 2;
    const r = await fairSparseGptMatrix(gemm, c.W, c.rows, c.cols, c.G, c.D, c.n, alpha, { ...opts, sparsity: 0 });
    // ∂/∂Ŵ [(Ŵ − W)(G + μI)(Ŵ − W)ᵀ + 2α Ŵ D Ŵᵀ] = 2(Ŵ − W)(G + μI) + 4α Ŵ D, μ = λ·n/2 (λ in H = 2G/n scale).
    const { cols } = c;
    let trace = 0;
    for (let j = 0; j < cols; j++) trace += c.G[j * cols + j]! + 2 * alpha * c.D[j * cols + j]!;
    const mu = (0.01 * trace) / cols;
    let worst = 0;
    for (let row = 0; row < c.rows; row++) for (let j = 0; j < cols; j++) {
      let g = 0;
      for (let a = 0; a < cols; a++) {
        const wa = r.weights[row * cols + a]!;
        g += 2 * (wa - c.W[row * cols + a]!) * (c.G[a * cols + j]! + (a === j ? mu : 0)) + 4 * alpha * wa * c.D[a * cols + j]!;
      }
      worst = Math.max(worst, Math.abs(g));
    }
    assert.ok(worst < 1e-9, `largest gradient entry ${worst}`);
    // …and the fairness term is below the dense weights' (the minimiser trades reconstruction for it).
    assert.ok(objective(c, r.weights, alpha).bias < objective(c, c.W, alpha).bias);
  });
});

describe('fair-wanda score', () => {
  it('hand-made case: W = [1, −2], tokens (1,0), (0,1), (1,1), one pair with Δ = (1, 0), α = 1 → S = [0, 8]; α = 0 → Wanda [√2, 2√2]', () => {
    const G = Float64Array.from([2, 1, 1, 2]);
    const D = Float64Array.from([1, 0, 0, 0]);
    const W = [1, -2];
    const WD = Float64Array.from([1, 0]);
    // By hand: F(W) = 2·(WΔ)² = 2. Removing w₀: ‖(1,0)·X‖² = 2, bias 0 → F = 2, S = 0.
    // Removing w₁: ‖(0,−2)·X‖² = 4·2 = 8, bias 2·1 = 2 → F = 10, S = 8.
    assert.deepEqual([...fairWandaScores(W, 1, 2, G, D, WD, 1)], [0, 8]);
    assert.deepEqual([...fairWandaScores(W, 1, 2, G, D, undefined, 0)], [Math.SQRT2, 2 * Math.SQRT2]);
  });

  it('equals F(W with w_ij removed) − F(W) computed from the tokens, for every weight of a random layer', async () => {
    const c = tinyCase(5, 3, 8, 25, 4);
    const alpha = 0.7;
    const WD = await gemm.product(Float64Array.from(c.W), c.D, c.rows, c.cols, c.cols);
    const S = fairWandaScores(c.W, c.rows, c.cols, c.G, c.D, WD, alpha);
    const F0 = objective(c, c.W, alpha).F;
    for (let i = 0; i < c.W.length; i++) {
      const What = c.W.slice();
      What[i] = 0;
      const expected = objective(c, What, alpha).F - F0;
      assert.ok(Math.abs(S[i]! - expected) < 1e-10 * (1 + Math.abs(expected)), `S[${i}] = ${S[i]}, expected ${expected}`);
    }
  });

  it('α = 0: the mask is Wanda\'s (per row, the lowest |W_ij|·‖X_j‖ computed here)', () => {
    const c = tinyCase(17, 6, 12, 30, 3);
    const mask = rowMask(fairWandaScores(c.W, c.rows, c.cols, c.G, c.D, undefined, 0), c.rows, c.cols, { sparsity: 0.5 });
    for (let r = 0; r < c.rows; r++) {
      const norms = Array.from({ length: c.cols }, (_, j) => Math.sqrt(c.X.reduce((s, x) => s + x[j]! ** 2, 0)));
      const order = Array.from({ length: c.cols }, (_, j) => j).sort((a, b) => Math.abs(c.W[r * c.cols + a]!) * norms[a]! - Math.abs(c.W[r * c.cols + b]!) * norms[b]!);
      const expected = new Set(order.slice(0, 6));
      for (let j = 0; j < c.cols; j++) assert.equal(mask[r * c.cols + j] === 1, expected.has(j), `row ${r} col ${j}`);
    }
  });
});

describe('fair pruning through a recipe (tiny-gpt2, 8 StereoSet pairs)', () => {
  const step = (o: Record<string, unknown>) => parseRecipe(JSON.stringify({ seed: 0, steps: [{ pairs: 'stereoset', pairs_limit: 8, calibration: 'one-shot', ...o }] }), 'fair.json');
  const ckpt = () => load('tiny-gpt2');
  const pairSet = () => pairCalibration({ model: ckpt(), pairs }, fairGptq.parseOptions({ bits: 4, pairs: 'stereoset', pairs_limit: 8 }, 't'), 't');
  const targets = (): LinearInfo[] => ckpt().family.linears(ckpt().config, ckpt().task).filter((l: LinearInfo) => l.layer >= 0);

  for (const [fair, plain] of [['fair-sparsegpt', 'sparsegpt'], ['fair-wanda', 'wanda']] as const) {
    it(`${fair} with α = 0 equals ${plain} calibrated on the same pair sentences; α = 5 keeps the sparsity and lowers ‖ŴΔ‖²`, async () => {
      const f0 = await applyRecipe(ckpt(), step({ method: fair, sparsity: 0.5, alpha: 0 }), { pairs, threads: 1 });
      const p0 = await applyRecipe(ckpt(), step({ method: plain, sparsity: 0.5, pairs: undefined, pairs_limit: undefined }), { calibration: pairSet(), threads: 1 });
      for (const t of targets()) assert.deepEqual([...f0.params.get(t.weight)!.data], [...p0.params.get(t.weight)!.data], t.weight);
      const f5 = await applyRecipe(ckpt(), step({ method: fair, sparsity: 0.5, alpha: 5 }), { pairs, threads: 1 });
      let b0 = 0;
      let b5 = 0;
      for (const [i, r] of f5.reports[0]!.entries()) {
        const t = targets().find((x) => x.weight === r.weight)!;
        const n = Math.round(0.5 * t.inDim * t.outDim);
        assert.equal(f5.params.get(t.weight)!.data.filter((v) => v === 0).length >= n, true, t.weight);
        b5 += r.detail!['bias_QdX_sq'] as number;
        b0 += f0.reports[0]![i]!.detail!['bias_QdX_sq'] as number;
      }
      assert.ok(b5 < b0, `Σ‖ŴΔ‖²: α = 5 gives ${b5}, α = 0 gives ${b0}`);
    });
  }

  it('bad options are one-line errors naming the step and key', () => {
    for (const [o, re] of [
      [{ method: 'fair-sparsegpt', sparsity: 0.5, alpha: -1 }, /"alpha".*must be in/],
      [{ method: 'fair-wanda', sparsity: 0.5, select_layers: 'middle' }, /"select_layers"/],
      [{ method: 'fair-wanda' }, /needs "sparsity"/],
      [{ method: 'fair-sparsegpt', sparsity: 0.5, colour: 1 }, /"colour".*unknown option/],
    ] as const) {
      assert.throws(() => step(o), (e: unknown) => e instanceof DikeError && re.test(e.message) && !e.message.includes('\n'), JSON.stringify(o));
    }
  });
});

describe('bias-aware head pruning: selection on hand-made tables', () => {
  // Two layers of three heads: importance I (loss increase when masked) and bias contribution C.
  const I = [[0.1, 0.5, 0.2], [0.3, 0.05, 0.4]];
  const C = [[0.05, 0.3, -0.1], [0.2, 0.1, 0]];

  it('fair-heads prunes the lowest I − λC per layer or globally; λ = 0 is importance alone', () => {
    // λ = 0: layer 0 lowest I is head 0 (0.1), layer 1 head 1 (0.05).
    assert.deepEqual(selectFairHeads(I, C, 0, { count: 1 }, false), [[0], [1]]);
    // λ = 2: layer 0 scores [0, −0.1, 0.4] → head 1; layer 1 [−0.1, −0.15, 0.4] → head 1.
    assert.deepEqual(selectFairHeads(I, C, 2, { count: 1 }, false), [[1], [1]]);
    // λ = 2, global, 3 of 6: −0.15 (1,1), −0.1 (0,1), −0.1 (1,0) → the tie at −0.1 goes by layer.
    assert.deepEqual(selectFairHeads(I, C, 2, { count: 3 }, true).map((r) => r.sort()), [[1], [0, 1]]);
    // fraction 1/3 of 3 heads per layer = 1.
    assert.deepEqual(selectFairHeads(I, C, 2, { fraction: 1 / 3 }, false), [[1], [1]]);
  });

  it('fasp keeps the round(γN) most important heads, then prunes the largest bias contributions', () => {
    // γ = 0.5 of 6 → 3 critical: (0,1) 0.5, (1,2) 0.4, (1,0) 0.3 — among them the two largest C.
    // Left: (0,0) C 0.05, (0,2) −0.1, (1,1) 0.1 → pruning 2 takes (1,1), then (0,0).
    const r = selectFasp(I, C, 0.5, { count: 2 });
    assert.deepEqual(r.critical, [[0, 1], [1, 2], [1, 0]]);
    assert.deepEqual(r.pruned, [[0], [1]]);
    // γ = 0: no exclusion, the two largest C overall: (0,1) 0.3 and (1,0) 0.2.
    assert.deepEqual(selectFasp(I, C, 0, { count: 2 }).pruned, [[1], [0]]);
    assert.throws(() => selectFasp(I, C, 0.5, { count: 4 }), (e: unknown) => e instanceof DikeError && /only 3 remain/.test(e.message));
  });
});

describe('bias-aware head pruning on tiny-gpt2 (2 layers × 4 heads, 8 StereoSet pairs)', () => {
  const recipe = (o: Record<string, unknown>) =>
    parseRecipe(JSON.stringify({ seed: 0, calibration: { file: CORPUS_FILE, samples: 4, seq_len: 24 }, steps: [{ pairs: 'stereoset', pairs_limit: 8, ...o }] }), 'heads.json');

  /** The model with head h of layer l masked (its c_proj input rows zeroed: GPT-2's Conv1D is [in, out]). */
  const withHeadMasked = (params: Map<string, Param>, l: number, h: number): Map<string, Param> => {
    const name = `transformer.h.${l}.attn.c_proj.weight`;
    const p = params.get(name)!;
    const data = p.data.slice();
    const [, out] = p.shape as [number, number];
    for (let i = h * 16; i < (h + 1) * 16; i++) data.fill(0, i * out, (i + 1) * out);
    return new Map(params).set(name, { ...p, data });
  };

  /** |mean gap| over the pairs, with score/text.ts (its own tokenization and BOS rule). */
  const absGap = async (params: Map<string, Param>): Promise<number> => {
    const ckpt = load('tiny-gpt2');
    const runner = await ModelRunner.create({ ...ckpt, params }, { threads: 1 });
    try {
      const ps = pairs({ source: 'stereoset', limit: 8 });
      const s = await scoreTexts(ckpt, runner, ps.map((p) => p.stereotype));
      const a = await scoreTexts(ckpt, runner, ps.map((p) => p.antiStereotype));
      return Math.abs(s.reduce((acc, x, k) => acc + x.total - a[k]!.total, 0) / ps.length);
    } finally {
      await runner.dispose();
    }
  };

  it('fair-heads: recorded contributions equal |gap| − |gap without the head| scored independently; λ = 0 prunes as heads (ablation)', async () => {
    const ckpt = load('tiny-gpt2');
    const f = await applyRecipe(ckpt, recipe({ method: 'fair-heads', count: 1, lambda: 0 }), { pairs, threads: 1 });
    const h = await applyRecipe(ckpt, recipe({ method: 'heads', count: 1, importance: 'ablation', pairs: undefined, pairs_limit: undefined }), { pairs, threads: 1 });
    for (const [name, p] of h.params) assert.deepEqual([...f.params.get(name)!.data], [...p.data], name);
    const r = f.reports[0]!.find((x) => x.weight === 'transformer.h.0.attn.c_proj.weight')!;
    const dense = await absGap(ckpt.params);
    for (let head = 0; head < 4; head++) {
      const expected = dense - (await absGap(withHeadMasked(ckpt.params, 0, head)));
      const got = r.detail![`bias_contribution_h${head}`] as number;
      // Both sides score with score/causal.ts underneath (the test masks the head, tokenizes and sums
      // itself), so they agree up to float64 summation order.
      assert.ok(Math.abs(got - expected) < 1e-12, `head ${head}: ${got} vs ${expected}`);
    }
  });

  it('a head already zeroed has importance 0 and contribution 0 exactly; fasp (γ = 0.5) prunes the largest contribution outside its critical heads', async () => {
    const ckpt = load('tiny-gpt2');
    const pre = { ...ckpt, params: withHeadMasked(ckpt.params, 1, 2) };
    // Layer 1 only: N = 4 heads, round(0.5 · 4) = 2 critical, 1 pruned.
    const r = await applyRecipe(pre, recipe({ method: 'fasp', count: 1, gamma: 0.5, scope: { layers: [1] } }), { pairs, threads: 1 });
    const rep = r.reports[0]!.find((x) => x.weight === 'transformer.h.1.attn.c_proj.weight')!;
    const table = (k: string) => [0, 1, 2, 3].map((hh) => rep.detail![`${k}_h${hh}`] as number);
    const I = table('importance');
    const C = table('bias_contribution');
    assert.equal(I[2], 0);
    assert.equal(C[2], 0);
    // The expected choice, from the recorded tables by the paper's rule written out here.
    const byImportance = [0, 1, 2, 3].sort((a, b) => I[b]! - I[a]! || a - b);
    const critical = byImportance.slice(0, 2);
    assert.deepEqual(String(rep.detail!['critical_heads']).split(','), critical.map((hh) => `1.${hh}`));
    const rest = [0, 1, 2, 3].filter((hh) => !critical.includes(hh)).sort((a, b) => C[b]! - C[a]! || a - b);
    assert.equal(rep.detail!['pruned_heads'], String(rest[0]));
  });
});

describe('bias-aware mixed precision', () => {
  it('allocation on a hand-made sensitivity table: by decreasing sensitivity, each unit that fits the high-bit budget', () => {
    const units = [
      { label: 'A', weights: ['a'], params: 100, sensitivity: 0.5 },
      { label: 'B', weights: ['b'], params: 300, sensitivity: 0.9 },
      { label: 'C', weights: ['c'], params: 100, sensitivity: 0.1 },
      { label: 'D', weights: ['d'], params: 500, sensitivity: 0 },
    ];
    assert.deepEqual(bySensitivity(units).map((u) => u.label), ['B', 'A', 'C', 'D']);
    // avg 5 of 8/4 over 1000 weights: budget (5 − 4)·1000/4 = 250; B (300) does not fit, A and C do.
    assert.deepEqual(allocateBits(bySensitivity(units), 8, 4, 5), { high: ['A', 'C'], avgBits: (200 * 8 + 800 * 4) / 1000 });
    // avg 6: budget 500 = B + A + C exactly, so the average is 6 as stated.
    assert.deepEqual(allocateBits(bySensitivity(units), 8, 4, 6), { high: ['B', 'A', 'C'], avgBits: 6 });
    // avg = low: nothing at high bits.
    assert.deepEqual(allocateBits(bySensitivity(units), 8, 4, 4), { high: [], avgBits: 4 });
  });

  describe('on tiny-gpt2 with a hand-written locate.json', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dike-mixed-'));
    after(() => rmSync(dir, { recursive: true, force: true }));
    const w = (l: number, m: string) => `transformer.h.${l}.${m}.weight`;
    const unit = (label: string, weights: string[], predicted: number) => ({ unit: label, weights, predicted, score_delta: predicted / 2 });
    const bench = (name: string) => ({
      benchmark: name,
      units: [
        unit('L0.attention', [w(0, 'attn.c_attn'), w(0, 'attn.c_proj')], 0.3),
        unit('L0.ffn', [w(0, 'mlp.c_fc'), w(0, 'mlp.c_proj')], -0.1),
        unit('L1.attention', [w(1, 'attn.c_attn'), w(1, 'attn.c_proj')], -0.5),
        unit('L1.ffn', [w(1, 'mlp.c_fc'), w(1, 'mlp.c_proj')], 0.05),
      ],
    });
    const one = path.join(dir, 'locate.json');
    const two = path.join(dir, 'locate2.json');
    writeFileSync(one, JSON.stringify({ benchmarks: [bench('crows-pairs')] }));
    writeFileSync(two, JSON.stringify({ benchmarks: [bench('crows-pairs'), bench('stereoset')] }));
    const recipe = (o: Record<string, unknown>) => parseRecipe(JSON.stringify({ seed: 0, steps: [{ method: 'mixed-precision', ...o }] }), 'mixed.json');

    it('the two attention modules (largest |predicted|) get 8 bits, the FFNs 4, at the stated average 4 + 4·(2·16384)/98304; each matrix equals RTN at its width', async () => {
      const ckpt = load('tiny-gpt2');
      // Attention per block: c_attn 64×192 + c_proj 64×64 = 16384 weights; FFN: 2 × 64×256 = 32768.
      const r = await applyRecipe(ckpt, recipe({ locate: one, avg_bits: 5.34, group_size: 32 }), { threads: 1 });
      const r8 = await applyRecipe(ckpt, parseRecipe(JSON.stringify({ steps: [{ method: 'rtn', bits: 8, group_size: 32 }] }), 'r8.json'));
      const r4 = await applyRecipe(ckpt, parseRecipe(JSON.stringify({ steps: [{ method: 'rtn', bits: 4, group_size: 32 }] }), 'r4.json'));
      let weighted = 0;
      let total = 0;
      for (const rep of r.reports[0]!) {
        const expected = rep.weight.includes('.attn.') ? 8 : 4;
        assert.equal(rep.bits, expected, rep.weight);
        assert.equal(r.quantized.get(rep.weight)!.bits, expected);
        assert.deepEqual([...r.params.get(rep.weight)!.data], [...(expected === 8 ? r8 : r4).params.get(rep.weight)!.data], rep.weight);
        const n = ckpt.params.get(rep.weight)!.data.length;
        weighted += expected * n;
        total += n;
      }
      assert.equal(total, 98304);
      assert.equal(weighted / total, 4 + (4 * 32768) / 98304);
      assert.ok(r.reports[0]!.every((x) => x.detail!['avg_bits'] === weighted / total));
    });

    it('order=random is the same-size baseline (seeded, at most the stated average); sensitivity=measured reads score_delta', async () => {
      const ckpt = load('tiny-gpt2');
      const a = await applyRecipe(ckpt, recipe({ order: 'random', avg_bits: 6 }), { threads: 1 });
      const b = await applyRecipe(ckpt, recipe({ order: 'random', avg_bits: 6 }), { threads: 1 });
      assert.deepEqual(a.reports[0]!.map((x) => x.bits), b.reports[0]!.map((x) => x.bits));
      const avg = a.reports[0]![0]!.detail!['avg_bits'] as number;
      assert.ok(avg <= 6 && avg >= 4, String(avg));
      // |score_delta| = |predicted| / 2 per unit, in forward order (L0 attention, L0 FFN, L1 attention, L1 FFN).
      const m = await applyRecipe(ckpt, recipe({ locate: one, sensitivity: 'measured', avg_bits: 5.34 }), { threads: 1 });
      assert.deepEqual(m.reports[0]!.map((x) => x.detail!['sensitivity']), [0.15, 0.15, 0.05, 0.05, 0.25, 0.25, 0.025, 0.025]);
    });

    it('bad input: several benchmarks without benchmark=, a missing file, order=bias without locate — one line each', async () => {
      const ckpt = load('tiny-gpt2');
      await assert.rejects(applyRecipe(ckpt, recipe({ locate: two, avg_bits: 5 })), (e: unknown) => e instanceof DikeError && /crows-pairs, stereoset: name one with the option benchmark/.test(e.message) && !e.message.includes('\n'));
      await assert.rejects(applyRecipe(ckpt, recipe({ locate: path.join(dir, 'nope.json'), avg_bits: 5 })), (e: unknown) => e instanceof DikeError && /file not found/.test(e.message));
      assert.throws(() => recipe({ avg_bits: 5 }), (e: unknown) => e instanceof DikeError && /"locate"/.test(e.message));
      assert.throws(() => recipe({ locate: one, avg_bits: 9 }), (e: unknown) => e instanceof DikeError && /"avg_bits".*must be in \[4, 8\]/.test(e.message));
      const ok = await applyRecipe(ckpt, recipe({ locate: two, benchmark: 'stereoset', avg_bits: 4 }));
      assert.ok(ok.reports[0]!.every((x) => x.bits === 4));
    });
  });
});
