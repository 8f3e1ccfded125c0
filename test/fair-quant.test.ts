/**
 * Beyond the published Fair-GPTQ (issue 14 §1 controls, §2): negative-control pair sources, the joint
 * solver. Every expected value is computed here independently (float64 naive linear algebra, a naive
 * GPTQ column loop, the data file read directly), never by the code under test.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { DATA, assertOneLineError, dike, loadModelCached as load, modelDir, scratchDir } from './fixtures.js';
import { derangement, sentencePairs } from '../src/measure/pairs.js';
import { variantFromMethodSpec } from '../src/audit/audit.js';
import { Gemm } from '../src/compress/gemm.js';
import { gptqMatrix, prepareHessian } from '../src/compress/methods/gptq.js';
import { fairGptq, fairPreUpdate, jointTarget } from '../src/compress/methods/fair-gptq.js';
import { applyRecipe, parseRecipe, readRecipe } from '../src/compress/recipe.js';
import { Rng } from '../src/util/rng.js';
import type { InputStats, PairSource } from '../src/compress/types.js';
import type { LinearInfo } from '../src/model/arch/types.js';
import { DikeError } from '../src/errors.js';
import { largestWithinBudget } from '../src/util/bisect.js';
import { COUNTERFACTUAL_AXES, counterfactualPairs, parseSwapList, readSwapLists, swapSentence } from '../src/measure/counterfactual.js';
import { loadCheckpoint } from '../src/model/checkpoint.js';
import { ModelRunner } from '../src/runtime/session.js';
import { heldOutPerplexity } from '../src/score/perplexity.js';

const pairs: PairSource = (req) => sentencePairs(DATA, req);

// ---- negative controls ------------------------------------------------------------------------

describe('negative-control pair sources', () => {
  it('derangement: a permutation with no fixed point, reproducible from its seed', () => {
    for (let n = 2; n <= 40; n++) {
      for (const seed of [0, 1, 7]) {
        const p = derangement(n, seed);
        assert.deepEqual([...p].sort((a, b) => a - b), Array.from({ length: n }, (_, i) => i));
        assert.ok(p.every((v, i) => v !== i), `n ${n} seed ${seed}: ${p}`);
        assert.deepEqual(derangement(n, seed), p);
      }
    }
    assert.notDeepEqual(derangement(30, 0), derangement(30, 1));
  });

  it('shuffled:stereoset keeps the same sentences and gives every stereotype another pair\'s counterpart', () => {
    const base = sentencePairs(DATA, { source: 'stereoset', limit: 20 });
    const sh = sentencePairs(DATA, { source: 'shuffled:stereoset', limit: 20 });
    assert.equal(sh.length, 20);
    assert.deepEqual(sh.map((p) => p.stereotype), base.map((p) => p.stereotype));
    assert.deepEqual(sh.map((p) => p.antiStereotype).sort(), base.map((p) => p.antiStereotype).sort());
    sh.forEach((p, i) => assert.notEqual(p.antiStereotype, base[i]!.antiStereotype));
    assert.notDeepEqual(sentencePairs(DATA, { source: 'shuffled:stereoset', limit: 20, seed: 3 }).map((p) => p.antiStereotype), sh.map((p) => p.antiStereotype));
    assert.deepEqual(sentencePairs(DATA, { source: 'shuffled:stereoset', limit: 20 }), sh);
  });

  it('unrelated:stereoset pairs each cluster\'s stereotype with its unrelated sentence (read from the file here)', () => {
    const doc = JSON.parse(readFileSync(path.join(DATA, 'stereoset', 'dev_intrasentence.json'), 'utf8')) as {
      data: { intrasentence: { sentences: { sentence: string; gold_label: string }[] }[] };
    };
    const want = doc.data.intrasentence.slice(0, 5).map((c) => [c.sentences.find((s) => s.gold_label === 'stereotype')!.sentence, c.sentences.find((s) => s.gold_label === 'unrelated')!.sentence]);
    const got = sentencePairs(DATA, { source: 'unrelated:stereoset', limit: 5 }).map((p) => [p.stereotype, p.antiStereotype]);
    assert.deepEqual(got, want);
    assert.deepEqual(got[0], ['The chess player was asian.', 'The chess player was fox.']);
    assert.throws(() => sentencePairs(DATA, { source: 'unrelated:crows-pairs' }), (e: unknown) => e instanceof DikeError && /only in StereoSet/.test(e.message));
  });

  it('a YAML recipe takes the new keys (controls, solver, budget, counterfactual axes as a list)', () => {
    const dir = scratchDir('fair-yaml');
    const file = path.join(dir, 'r.yaml');
    writeFileSync(file, 'seed: 0\nsteps:\n  - method: fair-gptq\n    bits: 4\n    pairs: shuffled:stereoset\n    pairs_seed: 3\n    solver: joint\n    quality_budget: 0.02\n  - method: fair-gptq\n    bits: 4\n    pairs: counterfactual\n    axes: [gender, religion]\n');
    const r = readRecipe(file);
    const a = fairGptq.parseOptions(r.steps[0]!.options, 'step 1');
    const b = fairGptq.parseOptions(r.steps[1]!.options, 'step 2');
    assert.deepEqual([a.pairs, a.pairs_seed, a.solver, a.quality_budget], ['shuffled:stereoset', 3, 'joint', 0.02]);
    assert.deepEqual([b.pairs, b.axes, b.solver, b.quality_budget], ['counterfactual', 'gender+religion', 'pre-update', 0]);
  });

  it('the control names pass through an audit --variant spec unchanged', () => {
    const v = variantFromMethodSpec('fair-gptq:bits=4,pairs=shuffled:stereoset,pairs_limit=8,solver=joint', undefined, 0);
    assert.equal(v.recipe!.steps[0]!.options['pairs'], 'shuffled:stereoset');
    assert.equal(v.recipe!.steps[0]!.options['solver'], 'joint');
    assert.match(v.name, /^fair-gptq-bits4-pairsshuffled_stereoset-pairs_limit8-solverjoint$/);
  });

  it('dike compress runs fair-gptq on the shuffled control and records the source', () => {
    const out = scratchDir('fair-ctl');
    const r = dike(['compress', modelDir('tiny-gpt2'), '--method', 'fair-gptq', '--bits', '4', '--group-size', '32', '--opt', 'alpha=0.5', '--opt', 'pairs=shuffled:stereoset',
      '--opt', 'pairs_limit=8', '--opt', 'solver=joint', '--opt', 'calibration=one-shot', '--data', DATA, '--out', path.join(out, 'm')]);
    assert.equal(r.code, 0, r.stderr);
    const cj = JSON.parse(readFileSync(path.join(out, 'm', 'compression.json'), 'utf8'));
    assert.equal(cj.recipe.steps[0].pairs, 'shuffled:stereoset');
    const m = cj.steps[0].matrices as { detail: Record<string, unknown> }[];
    assert.ok(m.every((x) => x.detail['solver'] === 'joint' && x.detail['pairs'] === 8));
    const bad = dike(['compress', modelDir('tiny-gpt2'), '--method', 'fair-gptq', '--bits', '4', '--opt', 'pairs=unrelated:crows-pairs', '--data', DATA, '--out', path.join(out, 'bad')]);
    assertOneLineError(bad, 'unrelated:crows-pairs', 'only in StereoSet');
    const badSolver = dike(['compress', modelDir('tiny-gpt2'), '--method', 'fair-gptq', '--bits', '4', '--opt', 'solver=exact', '--data', DATA, '--out', path.join(out, 'bad2')]);
    assertOneLineError(badSolver, 'solver', 'pre-update, joint');
  });
});

// ---- joint solver: independent float64 references -------------------------------------------

/** Row-major [r, c] · [c, k] in float64. */
function matmul(A: ArrayLike<number>, B: ArrayLike<number>, r: number, c: number, k: number): Float64Array {
  const C = new Float64Array(r * k);
  for (let i = 0; i < r; i++) for (let l = 0; l < c; l++) for (let j = 0; j < k; j++) C[i * k + j]! += A[i * c + l]! * B[l * k + j]!;
  return C;
}

/** A⁻¹ by Gauss–Jordan with partial pivoting (n×n, float64). */
function inverse(A: ArrayLike<number>, n: number): Float64Array {
  const M = Float64Array.from(A);
  const I = new Float64Array(n * n);
  for (let i = 0; i < n; i++) I[i * n + i] = 1;
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(M[r * n + c]!) > Math.abs(M[p * n + c]!)) p = r;
    for (let j = 0; j < n; j++) {
      [M[c * n + j], M[p * n + j]] = [M[p * n + j]!, M[c * n + j]!];
      [I[c * n + j], I[p * n + j]] = [I[p * n + j]!, I[c * n + j]!];
    }
    const d = M[c * n + c]!;
    for (let j = 0; j < n; j++) {
      M[c * n + j]! /= d;
      I[c * n + j]! /= d;
    }
    for (let r = 0; r < n; r++) {
      if (r === c) continue;
      const f = M[r * n + c]!;
      if (f === 0) continue;
      for (let j = 0; j < n; j++) {
        M[r * n + j]! -= f * M[c * n + j]!;
        I[r * n + j]! -= f * I[c * n + j]!;
      }
    }
  }
  return I;
}

/** Σ_rows a M aᵀ for A [rows, n]. */
function quad(A: ArrayLike<number>, M: ArrayLike<number>, rows: number, n: number): number {
  const AM = matmul(A, M, rows, n, n);
  let s = 0;
  for (let i = 0; i < rows * n; i++) s += A[i]! * AM[i]!;
  return s;
}

interface Case {
  rows: number;
  cols: number;
  W: Float32Array;
  gram: Float64Array;
  pairGram: Float64Array;
  tokens: number;
  pairs: number;
}

/**
 * A random layer: K pairs of L-token "sentences" with inputs X0, X1 that differ in a few positions
 * (the group word), G = Σ over both sentences' tokens of x xᵀ (as Fair-GPTQ's H is taken on the pair
 * sentences), D = Σ (x0 − x1)(x0 − x1)ᵀ. Input `dead` is never active.
 */
function randomCase(rng: Rng, rows: number, cols: number, K: number, L: number, dead = -1): Case {
  const gauss = (): number => Math.sqrt(-2 * Math.log(1 - rng.next())) * Math.cos(2 * Math.PI * rng.next());
  const W = Float32Array.from({ length: rows * cols }, () => Math.fround(gauss() * 0.3));
  const gram = new Float64Array(cols * cols);
  const pairGram = new Float64Array(cols * cols);
  // A shared low-rank "group direction" makes Δ structured, as a group word is.
  const dir = Array.from({ length: cols }, gauss);
  for (let k = 0; k < K; k++) {
    for (let p = 0; p < L; p++) {
      const x0 = Array.from({ length: cols }, gauss);
      const x1 = x0.slice();
      if (p === 1 || p === 2) {
        const a = gauss();
        for (let j = 0; j < cols; j++) x1[j] = x0[j]! + (1 + a) * dir[j]! + 0.3 * gauss();
      }
      if (dead >= 0) x0[dead] = x1[dead] = 0;
      for (let i = 0; i < cols; i++) {
        for (let j = 0; j < cols; j++) {
          gram[i * cols + j]! += x0[i]! * x0[j]! + x1[i]! * x1[j]!;
          pairGram[i * cols + j]! += (x0[i]! - x1[i]!) * (x0[j]! - x1[j]!);
        }
      }
    }
  }
  return { rows, cols, W, gram, pairGram, tokens: 2 * K * L, pairs: K };
}

/** Hd = 2G/n with the dead fix and λ = damp · mean diag; Hx = (4α/n) D — in the test's own words. */
function hessians(c: Case, alpha: number, damp: number): { H: Float64Array; Hd: Float64Array; Hx: Float64Array } {
  const n = c.cols;
  const H = c.gram.map((v) => (2 / c.tokens) * v);
  const Hd = H.slice();
  for (let j = 0; j < n; j++) if (Hd[j * n + j] === 0) Hd[j * n + j] = 1;
  let tr = 0;
  for (let j = 0; j < n; j++) tr += Hd[j * n + j]!;
  for (let j = 0; j < n; j++) Hd[j * n + j]! += (damp * tr) / n;
  const Hx = c.pairGram.map((v) => ((4 * alpha) / c.tokens) * v);
  return { H, Hd, Hx };
}

/** The combined objective ‖(Q − W)X‖² + ‖QΔ‖²_α in GPTQ's scale (undampened H). */
function objective(c: Case, Q: ArrayLike<number>, alpha: number): { recon: number; bias: number; total: number } {
  const { H, Hx } = hessians(c, alpha, 0);
  const n = c.cols;
  const D = new Float64Array(c.rows * n);
  for (let i = 0; i < D.length; i++) D[i] = Q[i]! - (H[(i % n) * n + (i % n)] === 0 ? 0 : c.W[i]!);
  const recon = quad(D, H, c.rows, n);
  const bias = quad(Q, Hx, c.rows, n);
  return { recon, bias, total: recon + bias };
}

/** Symmetric per-row grid (scale = 2·max|w| / maxq, float32), the written value of w. */
function rowGrid(w: ArrayLike<number>, bits: number): { q: (x: number) => number } {
  const maxq = 2 ** bits - 1;
  let a = 0;
  for (let i = 0; i < w.length; i++) a = Math.max(a, Math.abs(w[i]!));
  if (a === 0) a = 1;
  const scale = Math.fround(Math.fround(2 * a) / maxq);
  const zero = (maxq + 1) / 2;
  const rint = (x: number): number => {
    const r = Math.round(x);
    return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
  };
  return { q: (x) => Math.fround(scale * (Math.min(maxq, Math.max(0, rint(Math.fround(x / scale)) + zero)) - zero)) };
}

/**
 * GPTQ as Frantar et al. 2023 write it, naively: per-row grid from the target (dead columns
 * zeroed after the grid, as the reference), then for each column j: q = quant(w_j), and the error
 * (w_j − q)/[H⁻¹]_jj spread over later columns with the row j of H⁻¹ restricted to columns ≥ j, where
 * H⁻¹ is re-inverted on the not-yet-quantized block each time (no Cholesky, no blocking).
 */
function naiveGptq(target: ArrayLike<number>, rows: number, n: number, H2: Float64Array, bits: number, dead: Set<number>): Float64Array {
  const W = Float64Array.from(target);
  const grids = Array.from({ length: rows }, (_, r) => rowGrid(W.subarray(r * n, (r + 1) * n), bits));
  for (let r = 0; r < rows; r++) for (const j of dead) W[r * n + j] = 0;
  for (let j = 0; j < n; j++) {
    const m = n - j;
    const sub = new Float64Array(m * m);
    for (let a = 0; a < m; a++) for (let b = 0; b < m; b++) sub[a * m + b] = H2[(j + a) * n + (j + b)]!;
    const inv = inverse(sub, m);
    for (let r = 0; r < rows; r++) {
      const w = W[r * n + j]!;
      const q = grids[r]!.q(w);
      W[r * n + j] = q;
      const e = (w - q) / inv[0]!;
      for (let b = 1; b < m; b++) W[r * n + j + b]! -= e * inv[b]!;
    }
  }
  return W;
}

const stats = (c: Case): InputStats => ({ gram: c.gram, pairGram: c.pairGram, tokens: c.tokens, dim: c.cols, pairs: c.pairs, pairTokens: c.tokens / 2 });
const info = (c: Case): LinearInfo => ({ weight: 'l.weight', layout: 'out-in', inDim: c.cols, outDim: c.rows, layer: 0, module: 'ffn', role: 'up', seqGroup: 0 });

describe('fair-gptq solver=joint', () => {
  it('its target is the closed-form minimiser W·Hd·(Hd + H_x01)⁻¹ of the dampened objective', async () => {
    const gemm = new Gemm();
    try {
      const rng = new Rng(11);
      for (const [alpha, dead] of [[0.5, -1], [5, 3], [0.05, 0]] as const) {
        const c = randomCase(rng, 6, 12, 4, 5, dead);
        const { Hd, Hx } = hessians(c, alpha, 0.01);
        const want = matmul(matmul(c.W, Hd, c.rows, c.cols, c.cols), inverse(Hd.map((v, i) => v + Hx[i]!), c.cols), c.rows, c.cols, c.cols);
        const got = await jointTarget(gemm, c.W, c.rows, c.cols, c.gram, c.pairGram, c.tokens, alpha, 0.01);
        let err = 0;
        let mag = 0;
        for (let i = 0; i < want.length; i++) {
          err = Math.max(err, Math.abs(got.W[i]! - want[i]!));
          mag = Math.max(mag, Math.abs(want[i]!));
        }
        // Two float64 routes (Cholesky on ORT's GEMM vs Gauss–Jordan here): rounding-level agreement.
        assert.ok(err / mag < 1e-9, `α ${alpha}: ${err / mag}`);
        // And it is a stationary point of the objective: W*·(Hd + Hx) = W·Hd.
        const lhs = matmul(got.W, Hd.map((v, i) => v + Hx[i]!), c.rows, c.cols, c.cols);
        const rhs = matmul(c.W, Hd, c.rows, c.cols, c.cols);
        for (let i = 0; i < lhs.length; i++) assert.ok(Math.abs(lhs[i]! - rhs[i]!) < 1e-9 * (1 + Math.abs(rhs[i]!)));
      }
    } finally {
      await gemm.dispose();
    }
  });

  it('rounded with error feedback from Hd + H_x01: equals a naive float64 GPTQ on the combined objective', async () => {
    const gemm = new Gemm();
    try {
      const rng = new Rng(5);
      let same = 0;
      let total = 0;
      for (const [alpha, bits, dead] of [[0.5, 4, -1], [5, 3, 2], [1, 4, 0]] as const) {
        const c = randomCase(rng, 7, 40, 4, 6, dead);
        const j = await jointTarget(gemm, c.W, c.rows, c.cols, c.gram, c.pairGram, c.tokens, alpha, 0.01);
        const res = await gptqMatrix(gemm, Float32Array.from(j.W), c.rows, c.cols, j.h, { bits, group_size: -1, symmetric: true, static_groups: false, block_size: 16 });
        const { Hd, Hx } = hessians(c, alpha, 0.01);
        const want = naiveGptq(Float32Array.from(j.W), c.rows, c.cols, Hd.map((v, i) => v + Hx[i]!), bits, new Set(dead >= 0 ? [dead] : []));
        for (let i = 0; i < want.length; i++) {
          total++;
          if (res.weights[i] === want[i]) same++;
        }
      }
      // Measured: every weight equal (168 + 280 + 280); an order-of-summation tie could flip one code.
      assert.equal(same, total);
    } finally {
      await gemm.dispose();
    }
  });

  it('α = 0 is plain GPTQ exactly (matrix level and through the method)', async () => {
    const gemm = new Gemm();
    try {
      const c = randomCase(new Rng(2), 5, 24, 3, 4, 1);
      const opts = { bits: 4, group_size: 8, symmetric: true, static_groups: false, block_size: 8 };
      const j = await jointTarget(gemm, c.W, c.rows, c.cols, c.gram, c.pairGram, c.tokens, 0, 0.01);
      const a = await gptqMatrix(gemm, Float32Array.from(j.W), c.rows, c.cols, j.h, opts);
      const b = await gptqMatrix(gemm, c.W, c.rows, c.cols, await prepareHessian(gemm, stats(c), 0.01, false), opts);
      assert.deepEqual(a.weights, b.weights);
    } finally {
      await gemm.dispose();
    }
    const ckpt = load('tiny-gpt2');
    const recipe = (solver: string) =>
      parseRecipe(JSON.stringify({ seed: 0, steps: [{ method: 'fair-gptq', bits: 4, group_size: 32, alpha: 0, pairs: 'stereoset', pairs_limit: 6, calibration: 'one-shot', solver }] }), 'r.json');
    const a = await applyRecipe(ckpt, recipe('joint'), { threads: 1, pairs });
    const b = await applyRecipe(ckpt, recipe('pre-update'), { threads: 1, pairs });
    for (const [name, p] of b.params) assert.deepEqual(a.params.get(name)!.data, p.data, name);
  });

  it('on 96 tiny random layers its rounded objective against Fair-GPTQ\'s pre-update (sum_hessians 0 and 1)', async (t) => {
    const gemm = new Gemm();
    const rng = new Rng(2025);
    const rows: { alpha: number; joint: number; sh0: number; sh1: number }[] = [];
    try {
      for (let k = 0; k < 96; k++) {
        const alpha = [0.1, 0.5, 1, 5][k % 4]!;
        const bits = k % 8 < 4 ? 4 : 3;
        const c = randomCase(rng, 6, 32, 3, 6);
        const qo = { bits, group_size: 16, symmetric: true, static_groups: false, block_size: 128, dampening_frac: 0.01, act_order: false, calibration: 'one-shot' as const, symmetric_range: 'full' as const };
        const j = await jointTarget(gemm, c.W, c.rows, c.cols, c.gram, c.pairGram, c.tokens, alpha, 0.01);
        const joint = (await gptqMatrix(gemm, Float32Array.from(j.W), c.rows, c.cols, j.h, qo)).weights;
        const h = await prepareHessian(gemm, stats(c), 0.01, false);
        const fair = async (sh: 0 | 1): Promise<Float32Array> => {
          const o = { ...fairGptq.parseOptions({ bits, group_size: 16, alpha, sum_hessians: sh }, 't'), ...qo };
          const pre = await fairPreUpdate(gemm, o, () => alpha)(c.W, info(c), stats(c), h);
          return (await gptqMatrix(gemm, pre!.W, c.rows, c.cols, h, qo)).weights;
        };
        rows.push({ alpha, joint: objective(c, joint, alpha).total, sh0: objective(c, await fair(0), alpha).total, sh1: objective(c, await fair(1), alpha).total });
      }
    } finally {
      await gemm.dispose();
    }
    const summary = (k: 'sh0' | 'sh1', sel = rows): { noWorse: number; meanRatio: number } => ({
      noWorse: sel.filter((r) => r.joint <= r[k]).length / sel.length,
      meanRatio: sel.reduce((s, r) => s + r.joint / r[k], 0) / sel.length,
    });
    for (const a of [0.1, 0.5, 1, 5]) {
      const sel = rows.filter((r) => r.alpha === a);
      t.diagnostic(`α ${a}: joint/sh0 ${JSON.stringify(summary('sh0', sel))}, joint/sh1 ${JSON.stringify(summary('sh1', sel))}`);
    }
    const s0 = summary('sh0');
    const s1 = summary('sh1');
    t.diagnostic(`all: joint vs sum_hessians 0 ${JSON.stringify(s0)}; vs sum_hessians 1 ${JSON.stringify(s1)}`);
    assert.ok(rows.every((r) => Number.isFinite(r.joint) && r.joint > 0));
    // Measured (seed 2025): vs sum_hessians 0, no worse in 91/96 with mean ratio 0.29 (the first-order
    // pre-update overshoots: ratio 0.15 at α 0.5, 2e-4 at α 5); vs sum_hessians 1 (the same exact
    // minimiser as target, feedback from H alone), no worse in 68/96 with mean ratio 0.977 — at
    // α 0.1 no better on average (13/24, mean 1.003), at α 5 better in 22/24 (mean 0.93).
    assert.ok(s0.noWorse >= 0.9 && s0.meanRatio < 0.5, JSON.stringify(s0));
    assert.ok(s1.noWorse >= 0.6 && s1.meanRatio < 1, JSON.stringify(s1));
    const big = summary('sh1', rows.filter((r) => r.alpha === 5));
    assert.ok(big.noWorse >= 0.8 && big.meanRatio < 0.97, JSON.stringify(big));
  });
});

// ---- α from a quality budget -------------------------------------------------------------------

describe('fair-gptq quality_budget: α by bisection', () => {
  it('largestWithinBudget on a synthetic monotone cost finds the threshold (closed form) from below', async () => {
    // f(x) = x² / 100 within 0.02 ⇔ x ≤ √2.
    for (const steps of [3, 6, 10]) {
      const { x, trace } = await largestWithinBudget(async (a) => (a * a) / 100, 0.02, 10, { steps });
      const width = Math.pow(1e3, Math.pow(2, -steps)); // the final bracket's ratio hi/lo
      assert.ok(x <= Math.SQRT2 && x * width >= Math.SQRT2 * (1 - 1e-12), `steps ${steps}: ${x}`);
      assert.equal(trace.length, steps + 2);
      assert.ok(trace.every((t) => t.within === t.value <= 0.02));
      assert.equal(trace.filter((t) => t.within).reduce((m, t) => Math.max(m, t.x), 0), x);
    }
    assert.deepEqual((await largestWithinBudget(async () => 0.01, 0.02, 5, { steps: 4 })).x, 5);
    const none = await largestWithinBudget(async () => 1, 0.02, 5, { steps: 4 });
    assert.equal(none.x, 0);
    assert.equal(none.trace.length, 2);
  });

  it('a small real run: the written model\'s held-out perplexity is within the budget of α = 0 (measured here)', async (t) => {
    const out = scratchDir('fair-budget');
    const common = ['compress', modelDir('tiny-gpt2'), '--method', 'fair-gptq', '--bits', '3', '--group-size', '32', '--opt', 'pairs=stereoset', '--opt', 'pairs_limit=8',
      '--opt', 'calibration=one-shot', '--opt', 'solver=joint', '--data', DATA, '--threads', '1'];
    const budget = 0.002;
    const r = dike([...common, '--opt', 'alpha=50', '--opt', `quality_budget=${budget}`, '--opt', 'quality_lines=5', '--opt', 'budget_steps=3', '--out', path.join(out, 'b')]);
    assert.equal(r.code, 0, r.stderr);
    const r0 = dike([...common, '--opt', 'alpha=0', '--out', path.join(out, 'a0')]);
    assert.equal(r0.code, 0, r0.stderr);
    const cj = JSON.parse(readFileSync(path.join(out, 'b', 'compression.json'), 'utf8'));
    const d = cj.steps[0].matrices[0].detail as Record<string, unknown>;
    const trace = JSON.parse(d['budget_trace'] as string) as { alpha: number; relative_change?: number; quality?: number; within?: boolean }[];
    const chosen = d['alpha_chosen'] as number;
    t.diagnostic(`chosen α ${chosen}; trace ${d['budget_trace']}`);
    assert.ok(cj.steps[0].matrices.every((m: { detail: Record<string, unknown> }) => m.detail['alpha'] === chosen));
    // Independent check: perplexity of the two written models on the same 5 held-out lines.
    const lines = readFileSync(path.join(DATA, 'lm_corpus', 'valid.txt'), 'utf8').split('\n').filter((l) => l !== '').slice(0, 5);
    const ppl = async (dir: string): Promise<number> => {
      const ck = loadCheckpoint(dir);
      const runner = await ModelRunner.create(ck, { threads: 1 });
      try {
        return (await heldOutPerplexity(ck, runner, lines)).value;
      } finally {
        await runner.dispose();
      }
    };
    const p0 = await ppl(path.join(out, 'a0'));
    const pb = await ppl(path.join(out, 'b'));
    t.diagnostic(`held-out ppl α=0 ${p0}, chosen ${pb}, relative ${pb / p0 - 1}`);
    assert.equal(trace[0]!.quality, p0);
    assert.ok(pb / p0 - 1 <= budget, `${pb / p0 - 1}`);
    if (chosen > 0) assert.ok(trace.some((x) => x.alpha === chosen && x.within === true));
  });
});

// ---- counterfactual pairs --------------------------------------------------------------------

describe('counterfactual pairs from text (measure/counterfactual.ts)', () => {
  const gender = readSwapLists(['gender'])[0]!;
  const swap = (s: string, list = gender, seed = 0): string | undefined => swapSentence(s, list, new Rng(seed));

  it('gender: both directions, capitalisation, possessive \'s, plurals, whole words only', () => {
    assert.equal(swap('He gave his sister a book.'), 'She gave her brother a book.');
    assert.equal(swap('She told him that her mother was away.'), 'He told her that his father was away.');
    assert.equal(swap('The MAN and the women met.'), 'The WOMAN and the men met.');
    assert.equal(swap("The king's horses ran."), "The queen's horses ran.");
    assert.equal(swap('The kingdom and the heir were safe.'), undefined); // "king" inside a word, no term
    assert.equal(swap('Then she said it to her.'), 'Then he said it to him.'); // "her" at the end: object
    assert.equal(swap('Mrs. Smith met Mr. Jones.'), 'Mr. Smith met Mrs. Jones.');
  });

  it('multi-word terms match whole and across single spaces only; multi-class targets are seeded, one per sentence', () => {
    const list = parseSwapList('classes\ta\tb\tc\nred fox\tblue fox\tgreen fox\nreds\tblues\t-\n', 'mem.tsv', 't');
    const seen = new Set<string>();
    for (let seed = 0; seed < 20; seed++) {
      const out = swap('A red fox met the reds.', list, seed)!;
      seen.add(out);
      // Both terms go to the same class; "reds" has no counterpart in c and then stays.
      assert.ok(out === 'A blue fox met the blues.' || out === 'A green fox met the reds.', out);
      assert.equal(swap('A red fox met the reds.', list, seed), out);
    }
    assert.equal(seen.size, 2);
    assert.equal(swap('A red, fox ran.', list), undefined);
    assert.equal(swap('A redfox ran.', list), undefined);
    // Two classes of one sentence are exchanged both ways; a third stays.
    const three = parseSwapList('classes\ta\tb\tc\nx\ty\tz\n', 'mem.tsv', 't');
    for (let seed = 0; seed < 10; seed++) {
      const out = swap('x and y and z.', three, seed)!;
      assert.ok(out === 'y and x and z.' || out === 'z and y and x.', out);
    }
  });

  it('replacement-only cells are never matched; sentences without a term give no pair', () => {
    const age = readSwapLists(['age'])[0]!;
    assert.equal(swap('The young man walked.', age), 'The old man walked.');
    assert.equal(swap('The old house stood.', age), undefined);
    const text = 'It rained all day long here.\nThe old dog barked at him today. Nothing else happened at all today.\nA quick check: she walked home alone.\n';
    const ps = counterfactualPairs(text, readSwapLists(['age', 'gender']), 0);
    assert.deepEqual(ps, [
      { original: 'The old dog barked at him today.', counterfactual: 'The old dog barked at her today.', axis: 'gender', id: '2:1' },
      { original: 'A quick check: she walked home alone.', counterfactual: 'A quick check: he walked home alone.', axis: 'gender', id: '3:1' },
    ]);
  });

  it('bad lists and unknown axes are one-line errors naming file and line', () => {
    assert.throws(() => parseSwapList('he\tshe\n', 'g.tsv', 'g'), (e: unknown) => e instanceof DikeError && /g\.tsv.*line 1.*classes/.test(e.message));
    assert.throws(() => parseSwapList('classes\ta\tb\nx\n', 'g.tsv', 'g'), (e: unknown) => e instanceof DikeError && /line 2.*2 tab-separated/.test(e.message));
    assert.throws(() => readSwapLists(['caste']), (e: unknown) => e instanceof DikeError && /no word list for axis "caste"/.test(e.message));
    // Every shipped list parses and has its header's class count.
    for (const l of readSwapLists(COUNTERFACTUAL_AXES)) assert.ok(l.rows.length >= 3 && l.rows.every((r) => r.length === l.classes.length), l.axis);
  });

  it('pairs=counterfactual through dike compress: calibration text from the data directory, axes with +', () => {
    const out = scratchDir('fair-cf');
    const r = dike(['compress', modelDir('tiny-gpt2'), '--method', 'fair-gptq', '--bits', '4', '--group-size', '32', '--opt', 'pairs=counterfactual', '--opt', 'axes=gender+religion',
      '--opt', 'pairs_limit=6', '--opt', 'calibration=one-shot', '--data', DATA, '--out', path.join(out, 'm')]);
    assert.equal(r.code, 0, r.stderr);
    const cj = JSON.parse(readFileSync(path.join(out, 'm', 'compression.json'), 'utf8'));
    assert.equal(cj.recipe.steps[0].axes, 'gender+religion');
    // A recipe may list the axes.
    assert.equal(fairGptq.parseOptions({ bits: 4, pairs: 'counterfactual', axes: ['gender', 'age'] }, 'step 1').axes, 'gender+age');
    assert.throws(() => fairGptq.parseOptions({ bits: 4, axes: [1] }, 'step 1'), (e: unknown) => e instanceof DikeError && /"axes".*list of names/.test(e.message));
    assert.ok((cj.steps[0].matrices as { detail: Record<string, unknown> }[]).every((m) => m.detail['pairs'] === 6));
    const bad = dike(['compress', modelDir('tiny-gpt2'), '--method', 'fair-gptq', '--bits', '4', '--opt', 'pairs=counterfactual', '--opt', 'axes=caste', '--data', DATA, '--out', path.join(out, 'bad')]);
    assertOneLineError(bad, 'no word list for axis "caste"');
  });
});
