/**
 * Weight quantization: RTN and GPTQ (src/compress/quantizer.ts, methods/rtn.ts, methods/gptq.ts) and
 * the ORT-backed blocked inverse Cholesky they share (src/compress/gemm.ts).
 *
 * Expected values come from hand-worked grids, from the definitions (|w − ŵ| ≤ scale/2, codes in
 * range, ŵ = scale·(code − zero) recomputed here from the written files), from independent code
 * (linalg.ts's unblocked inverse Cholesky and reconstruction error, naive products here), and from
 * comparisons with the dense model — never from the code under test.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DATA, logSoftmaxRow, modelDir, readGolden, CLI } from './fixtures.js';
import { loadModelCached as load, removeLater, scratchDir } from './fixtures.js';
import { loadCheckpoint, type Checkpoint, type Param } from '../src/model/checkpoint.js';
import { readSafetensors, toFloat32 } from '../src/model/safetensors.js';
import { ModelRunner, padBatch, type ModelLike } from '../src/runtime/session.js';
import { applyRecipe, parseRecipe, writeCompressed, type CompressionResult, type Recipe } from '../src/compress/recipe.js';
import { inputStats, sampleCalibration } from '../src/compress/calibrate.js';
import { cholesky, choleskyInverseUpper, reconstructionError } from '../src/compress/linalg.js';
import { Gemm, blockedCholesky, choleskyInverseUpperBlocked } from '../src/compress/gemm.js';
import { grid, quantizeRtn, rint } from '../src/compress/quantizer.js';
import { gptqMatrix, prepareHessian } from '../src/compress/methods/gptq.js';
import type { LinearInfo } from '../src/model/arch/types.js';
import type { QuantState } from '../src/compress/types.js';
import { DikeError } from '../src/errors.js';

const CORPUS = path.join(DATA, 'lm_corpus', 'train.txt');
const CAL = { samples: 8, seq_len: 32 };
const SEED = 3;

const tmp = (tag: string): string => scratchDir(`quant-${tag}`);

function recipeOf(step: Record<string, unknown>, calibrated: boolean): Recipe {
  return parseRecipe(JSON.stringify({ seed: SEED, ...(calibrated ? { calibration: { file: CORPUS, ...CAL } } : {}), steps: [step] }), 'test.json');
}

async function compress(name: string, step: Record<string, unknown>): Promise<CompressionResult> {
  return applyRecipe(load(name), recipeOf(step, step['method'] === 'gptq'), { threads: 1 });
}

function targetsOf(ckpt: Checkpoint): LinearInfo[] {
  return ckpt.family.linears(ckpt.config, ckpt.task).filter((l) => l.module !== 'head');
}

/** A stored weight in [out, in] orientation (naive transpose for GPT-2's Conv1D). */
function outIn(data: Float32Array, t: LinearInfo): Float32Array {
  if (t.layout === 'out-in') return data;
  const m = new Float32Array(t.outDim * t.inDim);
  for (let i = 0; i < t.inDim; i++) for (let o = 0; o < t.outDim; o++) m[o * t.inDim + i] = data[i * t.outDim + o]!;
  return m;
}

/** Seeded uniform(−0.5, 0.5) (an LCG), so random cases are the same on every run. */
function lcg(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return s / 2147483648 - 0.5;
  };
}

/**
 * The definition of a valid integer form: codes in [0, 2^bits), symmetric zeros at 2^(bits−1),
 * and every entry of W within scale/2 of scale·(code − zero) for its (row, group). Returns the
 * dequantized matrix, recomputed here in float32.
 */
function checkState(s: QuantState, W: ArrayLike<number>, what: string, opts: { withinHalfStep: boolean }): Float32Array {
  const groups = Math.ceil(s.cols / s.groupSize);
  assert.equal(s.codes.length, s.rows * s.cols, `${what}: codes`);
  assert.equal(s.scales.length, s.rows * groups, `${what}: scales`);
  const out = new Float32Array(s.rows * s.cols);
  const bad: string[] = [];
  for (let r = 0; r < s.rows; r++) {
    for (let c = 0; c < s.cols; c++) {
      const k = r * groups + Math.floor(c / s.groupSize);
      const code = s.codes[r * s.cols + c]!;
      const scale = s.scales[k]!;
      const zero = s.zeros[k]!;
      if (!(code < 2 ** s.bits)) bad.push(`code ${code} at (${r}, ${c}) out of range`);
      if (!(scale > 0)) bad.push(`scale ${scale} at (${r}, ${c})`);
      if (s.symmetric ? zero !== 2 ** (s.bits - 1) : !(zero < 2 ** s.bits)) bad.push(`zero ${zero} at (${r}, ${c})`);
      const v = Math.fround(scale * (code - zero));
      out[r * s.cols + c] = v;
      if (opts.withinHalfStep) {
        const err = Math.abs(W[r * s.cols + c]! - v);
        // Half a step, plus float32 rounding of w / scale and of the product (a few ulps).
        if (!(err <= scale / 2 + 4e-7 * (Math.abs(v) + scale))) bad.push(`|w − ŵ| = ${err} > scale/2 = ${scale / 2} at (${r}, ${c})`);
      }
      if (bad.length > 5) break;
    }
  }
  assert.deepEqual(bad, [], `${what}: ${bad.join('; ')}`);
  return out;
}

// ---- the grid -----------------------------------------------------------------------------------

describe('quantizer grid (RTN)', () => {
  it('rounds half to even, as torch.round', () => {
    assert.deepEqual([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 2.4, -2.6, 7.5].map(rint), [-2, -2, -0, 0, 2, 2, 2, -3, 8]);
  });

  it('quantizes hand-worked rows (2-bit symmetric and asymmetric, an all-zero row)', () => {
    // Symmetric, maxq = 3: max|w| = 1.5 → scale = 2·1.5/3 = 1, zero = 2. w/scale = −1.5, −0.4, 0.6, 1.5
    // round (half to even) to −2, 0, 1, 2 → codes 0, 2, 3, 4 → clamped 3 → ŵ = −2, 0, 1, 1.
    const sym = Float32Array.from([-1.5, -0.4, 0.6, 1.5]);
    const s = quantizeRtn(grid(2, true), sym, 1, 4, -1);
    assert.deepEqual([...s.codes], [0, 2, 3, 3]);
    assert.deepEqual([...s.scales, ...s.zeros], [1, 2]);
    assert.deepEqual([...sym], [-2, 0, 1, 1]);
    // Asymmetric: range [−1, 2] → scale = 3/3 = 1, zero = round(1/1) = 1; w/scale + 1 = 0, 1, 1.5→1 (0.5 rounds to 0), 3.
    const asym = Float32Array.from([-1, 0, 0.5, 2]);
    const a = quantizeRtn(grid(2, false), asym, 1, 4, -1);
    assert.deepEqual([...a.codes], [0, 1, 1, 3]);
    assert.deepEqual([...a.scales, ...a.zeros], [1, 1]);
    assert.deepEqual([...asym], [-1, 0, 0, 2]);
    // All zeros: the reference's fallback range [−1, 1], every code at the zero point, ŵ = 0.
    const z = new Float32Array(4);
    const zs = quantizeRtn(grid(4, false), z, 1, 4, -1);
    assert.deepEqual([...zs.codes], [zs.zeros[0], zs.zeros[0], zs.zeros[0], zs.zeros[0]]);
    assert.equal(zs.scales[0], Math.fround(2 / 15));
    assert.deepEqual([...z], [0, 0, 0, 0]);
    // Groups of 2 over 4 columns: each group gets its own range.
    const gw = Float32Array.from([-1.5, 1.5, 0.25, -0.25]);
    const gs = quantizeRtn(grid(2, true), gw, 1, 4, 2);
    assert.deepEqual([...gs.scales], [1, Math.fround(Math.fround(0.5) / 3)]);
  });

  it('keeps every weight within scale/2 of its group grid, codes in range (2, 3, 4, 8 bits; sym/asym; per channel, groups)', () => {
    const rnd = lcg(11);
    const rows = 7;
    const cols = 45;
    for (const bits of [2, 3, 4, 8]) {
      for (const symmetric of [true, false]) {
        for (const groupSize of [-1, 16, 9, 45, 100]) {
          const W = Float32Array.from({ length: rows * cols }, (_, i) => rnd() * (1 + (i % 5)) + (i % 11 === 0 ? 0.3 : 0));
          const data = W.slice();
          const s = quantizeRtn(grid(bits, symmetric), data, rows, cols, groupSize);
          const what = `${bits}-bit ${symmetric ? 'sym' : 'asym'} g${groupSize}`;
          assert.equal(s.groupSize, groupSize === -1 || groupSize >= cols ? cols : groupSize, what);
          const deq = checkState(s, W, what, { withinHalfStep: true });
          // The weights written are exactly the integer form's values.
          assert.deepEqual(data, deq, `${what}: ŵ == scale·(code − zero)`);
        }
      }
    }
  });

  it('8-bit per channel: the 16-bit-class bound |w − ŵ| ≤ max|w_row| / 255 holds (16-bit codes are not stored: uint8)', () => {
    const rnd = lcg(5);
    const rows = 16;
    const cols = 200;
    const W = Float32Array.from({ length: rows * cols }, () => rnd() * 3);
    const data = W.slice();
    quantizeRtn(grid(8, true), data, rows, cols, -1);
    for (let r = 0; r < rows; r++) {
      let amax = 0;
      for (let c = 0; c < cols; c++) amax = Math.max(amax, Math.abs(W[r * cols + c]!));
      for (let c = 0; c < cols; c++) {
        const e = Math.abs(W[r * cols + c]! - data[r * cols + c]!);
        // Plus float32 rounding of ŵ itself (a few ulps of |w|, large next to an error of |w|/255).
        assert.ok(e <= amax / 255 + 4e-7 * amax, `row ${r} col ${c}: ${e} > ${amax / 255}`);
      }
    }
    assert.throws(() => recipeOf({ method: 'rtn', bits: 16 }, false), (e: unknown) => e instanceof DikeError && /supported widths are 2, 3, 4, 8/.test(e.message));
    assert.throws(() => recipeOf({ method: 'rtn', bits: 4, group_size: 0 }, false), (e: unknown) => e instanceof DikeError && /group_size/.test(e.message));
    assert.throws(() => recipeOf({ method: 'gptq', bits: 4, damp: 0.1 }, true), (e: unknown) => e instanceof DikeError && /"damp"/.test(e.message) && /unknown option/.test(e.message));
  });
});

// ---- RTN on the shared models --------------------------------------------------------------------

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

/** Log-probabilities over the vocabulary at every position of the first two golden texts. */
async function logprobsOf(name: string, params: Map<string, Param>): Promise<Float64Array[]> {
  const ckpt = load(name);
  const V = ckpt.shape.outputSize;
  const out: Float64Array[] = [];
  for (const t of readGolden(name).golden.texts.slice(0, 2)) {
    const ids = t.input_ids ?? t.ids;
    const logits = await logitsOf({ ...ckpt, params }, ids);
    for (let p = 0; p < ids.length; p++) out.push(logSoftmaxRow(logits.subarray(p * V, (p + 1) * V)));
  }
  return out;
}

function maxShift(a: Float64Array[], b: Float64Array[]): number {
  let worst = 0;
  a.forEach((row, i) => {
    for (let v = 0; v < row.length; v++) worst = Math.max(worst, Math.abs(row[v]! - b[i]![v]!));
  });
  return worst;
}

describe('rtn on the shared models', () => {
  // Tolerance 0.05 nats: an 8-bit per-channel step is max|w_row|/127.5, so each weight moves by at
  // most 0.4% of its row's largest weight; through 2–4 blocks that moved the log-probs of these
  // models by at most 0.016 nats when measured (small-gpt2), and 0.05 leaves 3× room. The 4-bit step
  // is 17× larger, so 8-bit must also be at least 4× closer to dense than 4-bit.
  for (const name of ['tiny-bert-mlm', 'tiny-gpt2', 'tiny-llama', 'small-bert-mlm', 'small-gpt2']) {
    it(`${name}: 8-bit per channel stays within 0.05 nats of dense, ≥ 4× closer than 4-bit; integer forms valid`, async () => {
      const ckpt = load(name);
      const r8 = await compress(name, { method: 'rtn', bits: 8 });
      const r4 = await compress(name, { method: 'rtn', bits: 4 });
      const targets = targetsOf(ckpt);
      assert.equal(r8.quantized.size, targets.length);
      for (const t of targets) {
        const W = outIn(ckpt.params.get(t.weight)!.data, t);
        const s = r8.quantized.get(t.weight)!;
        assert.deepEqual([s.rows, s.cols, s.bits, s.groupSize, s.symmetric], [t.outDim, t.inDim, 8, t.inDim, true]);
        const deq = checkState(s, W, t.weight, { withinHalfStep: true });
        assert.deepEqual(outIn(r8.params.get(t.weight)!.data, t), deq, `${t.weight}: written weights == integer form`);
      }
      // Untouched: embeddings, norms, biases, head.
      const changed = new Set(targets.map((t) => t.weight));
      for (const [k, p] of ckpt.params) if (!changed.has(k)) assert.deepEqual(r8.params.get(k)!.data, p.data, k);
      const dense = await logprobsOf(name, ckpt.params);
      const d8 = maxShift(dense, await logprobsOf(name, r8.params));
      const d4 = maxShift(dense, await logprobsOf(name, r4.params));
      assert.ok(d8 <= 0.05, `8-bit max |Δ log p| = ${d8}`);
      assert.ok(d8 * 4 <= d4, `8-bit ${d8} should be ≥ 4× below 4-bit ${d4}`);
    });
  }
});

// ---- blocked inverse Cholesky --------------------------------------------------------------------

function randomSpd(n: number, seed: number): Float64Array {
  const rnd = lcg(seed);
  const T = n + 5;
  const X = Float64Array.from({ length: T * n }, rnd);
  const G = new Float64Array(n * n);
  for (let t = 0; t < T; t++) for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) G[i * n + j]! += X[t * n + i]! * X[t * n + j]!;
  // The LCG's consecutive tuples are nearly linearly dependent in high dimension: add a ridge.
  for (let i = 0; i < n; i++) G[i * n + i]! += 0.1;
  return G;
}

describe('gemm: ORT-backed products and the blocked inverse Cholesky', () => {
  it('products match naive sums (transposes, alpha, C)', async () => {
    const gemm = new Gemm(1);
    try {
      const rnd = lcg(2);
      const [m, k, n] = [5, 7, 3];
      const A = Float64Array.from({ length: m * k }, rnd);
      const At = new Float64Array(k * m);
      for (let i = 0; i < m; i++) for (let j = 0; j < k; j++) At[j * m + i] = A[i * k + j]!;
      const B = Float64Array.from({ length: k * n }, rnd);
      const C = Float64Array.from({ length: m * n }, rnd);
      const naive = new Float64Array(m * n);
      for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) {
        let s = 0;
        for (let t = 0; t < k; t++) s += A[i * k + t]! * B[t * n + j]!;
        naive[i * n + j] = C[i * n + j]! - s;
      }
      const y = await gemm.product(At, B, m, k, n, { transA: true, alpha: -1, C });
      for (let i = 0; i < m * n; i++) assert.ok(Math.abs(y[i]! - naive[i]!) < 1e-12, `y[${i}]`);
    } finally {
      await gemm.dispose();
    }
  });

  it('gives the same bytes with 1 and 2 threads (the output never depends on the thread count)', async () => {
    const rnd = lcg(6);
    const [m, k, n] = [300, 130, 257];
    const A = Float64Array.from({ length: k * m }, rnd);
    const B = Float64Array.from({ length: k * n }, rnd);
    const C = Float64Array.from({ length: m * n }, rnd);
    const out: Float64Array[] = [];
    for (const threads of [1, 2]) {
      const gemm = new Gemm(threads);
      try {
        out.push(await gemm.product(A, B, m, k, n, { transA: true, alpha: -1, C }));
      } finally {
        await gemm.dispose();
      }
    }
    assert.deepEqual(out[0], out[1]);
  });

  it('blocked Cholesky and U equal linalg.ts’s unblocked ones (ragged blocks, dead input)', async () => {
    const gemm = new Gemm(1);
    try {
      const n = 70;
      const A = randomSpd(n, 9);
      const Lref = cholesky(A, n);
      const { L } = await blockedCholesky(gemm, A, n, 16);
      for (let i = 0; i < n * n; i++) assert.ok(Math.abs(L[i]! - Lref[i]!) <= 1e-10 * Math.abs(Lref[Math.floor(i / n) * (n + 1)]!), `L[${i}]`);
      // A dead input (zero row and column) and n > 256 so that the default block width is exercised.
      const m = 300;
      const H = randomSpd(m, 4);
      for (let j = 0; j < m; j++) H[17 * m + j] = H[j * m + 17] = 0;
      const Uref = choleskyInverseUpper(H, m, 0.01);
      const { U, lambda } = await choleskyInverseUpperBlocked(gemm, H, m, 0.01);
      let tr = 0;
      for (let j = 0; j < m; j++) tr += j === 17 ? 1 : H[j * m + j]!;
      assert.ok(Math.abs(lambda - (0.01 * tr) / m) <= 1e-12 * lambda);
      let worst = 0;
      for (let i = 0; i < m * m; i++) worst = Math.max(worst, Math.abs(U[i]! - Uref[i]!) / Math.abs(Uref[Math.floor(i / m) * (m + 1)]!));
      assert.ok(worst < 1e-9, `max relative difference ${worst}`);
    } finally {
      await gemm.dispose();
    }
  });
});

// ---- GPTQ on synthetic matrices ------------------------------------------------------------------

describe('gptq on synthetic matrices', () => {
  const base = { bits: 4, group_size: -1, symmetric: true, act_order: false, static_groups: false, block_size: 128 };

  it('reduces to RTN when H is a multiple of the identity (no error feedback)', async () => {
    const gemm = new Gemm(1);
    try {
      const rnd = lcg(21);
      const [rows, cols] = [6, 40];
      const gram = new Float64Array(cols * cols);
      for (let j = 0; j < cols; j++) gram[j * cols + j] = 50;
      const W = Float32Array.from({ length: rows * cols }, rnd);
      for (const group_size of [-1, 8]) {
        for (const symmetric of [true, false]) {
          const h = await prepareHessian(gemm, { gram, tokens: 100, dim: cols }, 0.01, false);
          const res = await gptqMatrix(gemm, W, rows, cols, h, { ...base, group_size, symmetric, block_size: 16 });
          const rtnW = W.slice();
          const s = quantizeRtn(grid(4, symmetric), rtnW, rows, cols, group_size);
          assert.deepEqual(res.weights, rtnW, `g${group_size} ${symmetric}`);
          assert.deepEqual(res.state.codes, s.codes);
          assert.deepEqual(res.state.scales, s.scales);
        }
      }
    } finally {
      await gemm.dispose();
    }
  });

  it('act_order with H_jj already decreasing is the identity order: same result as without', async () => {
    const gemm = new Gemm(1);
    try {
      const rnd = lcg(31);
      const [rows, cols] = [5, 48];
      const gram = new Float64Array(cols * cols);
      for (let i = 0; i < cols; i++) {
        for (let j = 0; j < cols; j++) gram[i * cols + j] = 0.3 * Math.exp(-Math.abs(i - j) / 4);
        gram[i * cols + i] = 10 + (cols - i); // strictly decreasing diagonal
      }
      const W = Float32Array.from({ length: rows * cols }, rnd);
      const plain = await gptqMatrix(gemm, W, rows, cols, await prepareHessian(gemm, { gram, tokens: 64, dim: cols }, 0.01, false), { ...base, block_size: 16 });
      const ordered = await prepareHessian(gemm, { gram, tokens: 64, dim: cols }, 0.01, true);
      assert.deepEqual([...ordered.perm!], Array.from({ length: cols }, (_, j) => j));
      const act = await gptqMatrix(gemm, W, rows, cols, ordered, { ...base, block_size: 16 });
      assert.deepEqual(act.weights, plain.weights);
      // Reversing the diagonal reverses the order.
      for (let i = 0; i < cols; i++) gram[i * cols + i] = 10 + i;
      assert.deepEqual([...(await prepareHessian(gemm, { gram, tokens: 64, dim: cols }, 0.01, true)).perm!], Array.from({ length: cols }, (_, j) => cols - 1 - j));
    } finally {
      await gemm.dispose();
    }
  });

  it('reports the exact ‖(W − Ŵ)X‖², beats RTN, zeroes dead inputs, keeps the integer form', async () => {
    const gemm = new Gemm(1);
    try {
      const rnd = lcg(8);
      const [rows, cols, T] = [24, 150, 400];
      // Correlated inputs (a shared component) with one dead input (column 33 never active).
      const X = new Float64Array(T * cols);
      for (let t = 0; t < T; t++) {
        const common = rnd();
        for (let j = 0; j < cols; j++) X[t * cols + j] = j === 33 ? 0 : rnd() + 0.8 * common * ((j % 3) - 1) + (j % 17 === 0 ? 2 * rnd() : 0);
      }
      const gram = new Float64Array(cols * cols);
      for (let t = 0; t < T; t++) for (let i = 0; i < cols; i++) for (let j = 0; j < cols; j++) gram[i * cols + j]! += X[t * cols + i]! * X[t * cols + j]!;
      const W = Float32Array.from({ length: rows * cols }, rnd);
      for (const [what, o] of [
        ['per channel', {}],
        ['g32', { group_size: 32 }],
        ['g32 act_order', { group_size: 32, act_order: true }],
        ['3-bit g50 asym, block 64', { bits: 3, group_size: 50, symmetric: false, block_size: 64 }],
        ['2-bit per channel act_order', { bits: 2, act_order: true }],
      ] as const) {
        const opts = { ...base, ...o };
        const h = await prepareHessian(gemm, { gram, tokens: T, dim: cols }, 0.01, opts.act_order);
        const res = await gptqMatrix(gemm, W, rows, cols, h, opts);
        const direct = reconstructionError(W, res.weights, gram, rows, cols);
        assert.ok(Math.abs(res.error - direct) <= 1e-8 * direct, `${what}: reported ${res.error}, direct ${direct}`);
        const rtnW = W.slice();
        quantizeRtn(grid(opts.bits, opts.symmetric), rtnW, rows, cols, opts.group_size);
        const rtnErr = reconstructionError(W, rtnW, gram, rows, cols);
        assert.ok(direct < rtnErr, `${what}: GPTQ ${direct} ≥ RTN ${rtnErr}`);
        for (let r = 0; r < rows; r++) assert.equal(res.weights[r * cols + 33], 0, `${what}: dead input`);
        // ŵ = scale·(code − zero) exactly; GPTQ moves weights, so no scale/2 bound against W.
        assert.deepEqual(res.weights, checkState(res.state, W, what, { withinHalfStep: false }), what);
        if (opts.act_order && opts.group_size > 0) {
          // Static groups: each group's grid is RTN's grid of the original (dead-zeroed) weights.
          const Wd = W.slice();
          for (let r = 0; r < rows; r++) Wd[r * cols + 33] = 0;
          const s = quantizeRtn(grid(opts.bits, opts.symmetric), Wd, rows, cols, opts.group_size);
          assert.deepEqual(res.state.scales, s.scales, `${what}: static group scales`);
        }
      }
    } finally {
      await gemm.dispose();
    }
  });
});

// ---- GPTQ on the shared models -------------------------------------------------------------------

describe('gptq on the shared models: ‖WX − ŴX‖² ≤ RTN on every layer', () => {
  const configs: [string, Record<string, unknown>][] = [
    ['tiny-bert-mlm', { bits: 4, group_size: 32 }],
    ['tiny-bert-mlm', { bits: 3, act_order: true }],
    ['tiny-gpt2', { bits: 4, group_size: 32 }],
    ['tiny-gpt2', { bits: 4, group_size: 32, act_order: true }],
    ['tiny-gpt2', { bits: 2, symmetric: false }],
    ['tiny-llama', { bits: 4, group_size: 16 }],
    ['tiny-llama', { bits: 3, group_size: 32, act_order: true }],
    ['small-gpt2', { bits: 4, group_size: 128 }],
    ['small-bert-mlm', { bits: 4, group_size: 128, act_order: true }],
  ];
  for (const [name, o] of configs) {
    it(`${name} ${JSON.stringify(o)}`, async () => {
      const ckpt = load(name);
      const targets = targetsOf(ckpt);
      // Compared on the dense model's Grams: what a one-shot step sees (sequential: calibrate-sequential.test.ts).
      const gq = await compress(name, { method: 'gptq', calibration: 'one-shot', ...o });
      const rt = await compress(name, { method: 'rtn', ...Object.fromEntries(Object.entries(o).filter(([k]) => k !== 'act_order')) });
      // Grams recomputed here on the dense model with the same seeded calibration sample.
      const calib = sampleCalibration(ckpt, { file: CORPUS, samples: CAL.samples, seqLen: CAL.seq_len, seed: SEED });
      assert.equal(calib.hash, gq.calibration!.hash);
      const stats = await inputStats(ckpt, ckpt.params, targets, calib, { threads: 1 });
      const reports = new Map(gq.reports[0]!.map((r) => [r.weight, r]));
      const worse: string[] = [];
      for (const t of targets) {
        const W = outIn(ckpt.params.get(t.weight)!.data, t);
        const gW = outIn(gq.params.get(t.weight)!.data, t);
        const rW = outIn(rt.params.get(t.weight)!.data, t);
        const gram = stats.get(t.weight)!.gram;
        const eg = reconstructionError(W, gW, gram, t.outDim, t.inDim);
        const er = reconstructionError(W, rW, gram, t.outDim, t.inDim);
        if (!(eg <= er)) worse.push(`${t.weight}: GPTQ ${eg} > RTN ${er}`);
        const reported = reports.get(t.weight)!.detail!['error'] as number;
        assert.ok(Math.abs(reported - eg) <= 1e-6 * eg + 1e-9, `${t.weight}: reported error ${reported}, recomputed ${eg}`);
        assert.deepEqual(gW, checkState(gq.quantized.get(t.weight)!, W, t.weight, { withinHalfStep: false }), `${t.weight}: integer form`);
      }
      assert.deepEqual(worse, [], worse.join('\n'));
    });
  }
});

// ---- files: determinism, integer form on disk, CLI ------------------------------------------------

describe('gptq output files', () => {
  it('same seed → byte-identical model.safetensors; quantization.safetensors matches the weights exactly', async () => {
    const name = 'tiny-gpt2';
    const recipe = recipeOf({ method: 'gptq', bits: 4, group_size: 32, act_order: true }, true);
    const dirs = [tmp('a'), tmp('b')];
    for (const d of dirs) writeCompressed(load(name), await applyRecipe(load(name), recipe, { threads: 1 }), recipe, d);
    const bytes = dirs.map((d) => readFileSync(path.join(d, 'model.safetensors')));
    assert.ok(bytes[0]!.equals(bytes[1]!), 'model.safetensors differs between two runs');
    assert.ok(readFileSync(path.join(dirs[0]!, 'quantization.safetensors')).equals(readFileSync(path.join(dirs[1]!, 'quantization.safetensors'))));
    const model = readSafetensors(path.join(dirs[0]!, 'model.safetensors'));
    const q = readSafetensors(path.join(dirs[0]!, 'quantization.safetensors'));
    const targets = targetsOf(load(name));
    for (const t of targets) {
      const meta = JSON.parse(q.metadata[t.weight]!) as { bits: number; group_size: number; symmetric: boolean };
      assert.deepEqual(meta, { bits: 4, group_size: 32, symmetric: true });
      const codes = q.tensors.get(`${t.weight}.codes`)!;
      const scales = toFloat32(q.tensors.get(`${t.weight}.scales`)!);
      const zeros = q.tensors.get(`${t.weight}.zeros`)!;
      assert.deepEqual(codes.shape, [t.outDim, t.inDim]);
      const stored = model.tensors.get(t.weight)!;
      assert.equal(stored.dtype, 'F32');
      const w = outIn(toFloat32(stored), t);
      const groups = Math.ceil(t.inDim / 32);
      for (let r = 0; r < t.outDim; r++) {
        for (let c = 0; c < t.inDim; c++) {
          const k = r * groups + Math.floor(c / 32);
          const v = Math.fround(scales[k]! * (codes.bytes[r * t.inDim + c]! - zeros.bytes[k]!));
          assert.equal(w[r * t.inDim + c], v, `${t.weight} (${r}, ${c})`);
        }
      }
    }
  });

  it('dike compress --method gptq writes a model that loads and scores', () => {
    const out = path.join(tmp('cli'), 'out');
    const r = spawnSync(
      process.execPath,
      [CLI, 'compress', modelDir('tiny-gpt2'), '--method', 'gptq', '--bits', '4', '--group-size', '32', '--calibration', CORPUS, '--samples', '8', '--seq-len', '32', '--out', out],
      { encoding: 'utf8' },
    );
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /gptq on 8 matrices/);
    const record = JSON.parse(readFileSync(path.join(out, 'compression.json'), 'utf8')) as { recipe: { steps: Record<string, unknown>[] }; steps: { matrices: { detail: { error: number } }[] }[] };
    assert.equal(record.recipe.steps[0]!['group_size'], 32);
    assert.ok(record.steps[0]!.matrices.every((m) => Number.isFinite(m.detail.error) && m.detail.error >= 0));
    // The recorded step is a valid recipe step again.
    const { scope: _scope, ...step } = record.recipe.steps[0]!;
    recipeOf(step, true);
    const text = readGolden('tiny-gpt2').golden.texts[0]!.text;
    const lp = spawnSync(process.execPath, [CLI, 'logprobs', out, '--json', '--text', text], { encoding: 'utf8' });
    assert.equal(lp.status, 0, lp.stderr);
    const [score] = JSON.parse(lp.stdout) as { ids: number[]; logprobs: number[]; total: number }[];
    assert.deepEqual(score!.ids, readGolden('tiny-gpt2').golden.texts[0]!.ids);
    assert.ok(score!.logprobs.every((x) => Number.isFinite(x) && x <= 0));
    // 4-bit g32 GPTQ of a random tiny model: the total moves, but stays within 10% of dense.
    const dense = readGolden('tiny-gpt2').golden.texts[0]!.total!;
    assert.ok(Math.abs(score!.total - dense) <= 0.1 * Math.abs(dense), `total ${score!.total} vs dense ${dense}`);
  });
});
