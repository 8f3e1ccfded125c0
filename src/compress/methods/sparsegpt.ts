/**
 * SparseGPT (Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can Be Accurately Pruned
 * in One-Shot", Algorithm 1). Per matrix W [out, in] with calibration inputs X [in, tokens]:
 *
 *   H = 2 X Xᵀ / tokens + λI, λ = dampening_frac · mean diag H        (the layer-wise Hessian)
 *   U = upper Cholesky factor of H⁻¹: row j of U, from the diagonal on, is the OBS direction for
 *       removing input j once inputs < j are fixed, and U_jj² = [H_{j:,j:}⁻¹]_00
 *   for each block of B input columns (lazy batch updates, as in GPTQ):
 *     every B_s columns ("adaptive mask selection"): prune the block's exact share of the entries of
 *       smallest OBS error w²/[H⁻¹]_jj = w²/U_jj²; for N:M ("semi-structured sparsity"), per row,
 *       the M − N smallest of every group of M inputs, chosen when the group is reached
 *     column j: e = w_j / U_jj on pruned entries (0 elsewhere); w_j ← 0;
 *       W[:, j+1:block end] −= e · U[j, j+1:block end]   (OBS: δ = −w_j/[H⁻¹]_jj · H⁻¹_{j,:})
 *     after the block: W[:, block end:] −= E · U[block, block end:]
 *
 * Exact bookkeeping: W − Ŵ = E·U, so ‖W − Ŵ‖²_H = ‖E‖²_F (U H Uᵀ = I), and the reconstruction error
 * ‖(W − Ŵ)X‖² = tokens/2 · (‖E‖² − λ‖W − Ŵ‖²) comes for free (recorded in the report).
 * Inputs never active on the calibration set are zeroed first (their H_jj is set to 1), as in the
 * reference code. Weights are processed in float64 and U is computed in float64 (linalg.ts); the
 * result is written back as float32.
 *
 * Calibration: `sequential` (default) block by block as the reference code runs it, every map of
 * a block on the block's inputs computed with the earlier blocks pruned; `one-shot`: dense inputs.
 *
 * Counts: the mask block [a, b) removes round(s·rows·b) − round(s·rows·a) weights, so the matrix
 * loses exactly round(s·rows·cols) — magnitude pruning's per-matrix count. (The reference code takes
 * every entry at or below the ⌊s·n⌋-th smallest score per block, one or a few more.)
 */
import { DikeError } from '../../errors.js';
import { choleskyInverseUpper, dampen, deadInputs } from '../linalg.js';
import { checkNM, countFor, markNM, markSmallest, parsePattern } from '../mask.js';
import { OptionReader } from '../options.js';
import { type Method, type MatrixReport, type RawOptions, fromOutIn, toOutIn, zeroFraction } from '../types.js';
import { readSparsityOrPattern } from './wanda.js';
import { CALIBRATION_MODES, type CalibrationMode } from '../calibrate.js';

export interface SparseGptOptions {
  sparsity?: number;
  pattern?: string;
  /** B: columns per lazy batch update. */
  block_size: number;
  /** B_s: columns per adaptive mask selection (one of B, B_s divides the other). */
  mask_block_size: number;
  /** λ as a fraction of the mean diagonal of H. */
  dampening_frac: number;
  /** `sequential` (default, as IST-DASLab/sparsegpt): block by block, earlier blocks pruned; `one-shot`: the dense inputs. */
  calibration: CalibrationMode;
}

export interface SparseGptResult {
  /** Pruned weights, [rows, cols] float64. */
  weights: Float64Array;
  /** ‖(W − Ŵ)X‖² over the calibration tokens (W after zeroing dead inputs). */
  reconstructionError: number;
  deadInputs: number;
}

/**
 * SparseGPT on one matrix in [out, in] orientation (rows = outputs). `gram` = Σ x xᵀ over `tokens`
 * calibration tokens, [cols, cols]. Pure: returns new weights.
 */
export function sparseGptMatrix(
  W0: ArrayLike<number>,
  rows: number,
  cols: number,
  gram: Float64Array,
  tokens: number,
  opts: { sparsity?: number; nm?: { n: number; m: number }; blockSize: number; maskBlockSize: number; dampeningFrac: number },
): SparseGptResult {
  if (!(tokens > 0)) throw new DikeError('recipe', 'sparsegpt', 'calibration saw no tokens');
  const W = new Float64Array(W0);
  // H = 2XXᵀ/n (the Hessian of ‖WX − ŴX‖²/n); any positive scale gives the same mask and update.
  const H = new Float64Array(cols * cols);
  for (let i = 0; i < H.length; i++) H[i] = (2 * gram[i]!) / tokens;
  const dead = deadInputs(H, cols);
  for (const j of dead) for (let r = 0; r < rows; r++) W[r * cols + j] = 0;
  const W1 = W.slice(); // W after the dead-input step, the reference for the error bookkeeping
  const { lambda } = dampen(H, cols, opts.dampeningFrac);
  const U = choleskyInverseUpper(H, cols, opts.dampeningFrac);

  const B = opts.blockSize;
  const Bs = opts.maskBlockSize;
  const nm = opts.nm;
  const mask = new Uint8Array(rows * cols);
  const E = new Float64Array(rows * B); // errors e of the current block, [rows, B]
  // Rows are independent once the mask is known, so each stretch between two mask selections is
  // processed row by row (the row's block segment stays in cache); N:M masks are per row anyway.
  const step = nm === undefined && Bs < B ? Bs : B;
  const nmScores = new Float64Array(nm?.m ?? 0);
  const nmMask = new Uint8Array(nm?.m ?? 0);
  const nmOrder = new Int32Array(nm?.m ?? 0);
  let errSq = 0;
  for (let i1 = 0; i1 < cols; i1 += B) {
    const i2 = Math.min(i1 + B, cols);
    E.fill(0);
    for (let s1 = i1; s1 < i2; s1 += step) {
      const s2 = Math.min(s1 + step, i2);
      if (nm === undefined && s1 % Bs === 0) selectUnstructured(W, U, rows, cols, s1, Math.min(s1 + Bs, cols), opts.sparsity!, mask);
      for (let r = 0; r < rows; r++) {
        const o = r * cols;
        for (let j = s1; j < s2; j++) {
          if (nm !== undefined && j % nm.m === 0) {
            // This row's group [j, j + M): prune the M − N smallest w²/U_cc² (W is current up to j).
            for (let c = 0; c < nm.m; c++) {
              const w = W[o + j + c]!;
              const d = U[(j + c) * cols + j + c]!;
              nmScores[c] = (w * w) / (d * d);
            }
            nmMask.fill(0);
            markNM(nmScores, nm.m, 0, 0, nm.m, nm.n, nm.m, nmMask, nmOrder);
            for (let c = 0; c < nm.m; c++) if (nmMask[c]) mask[o + j + c] = 1;
          }
          if (!mask[o + j]) continue;
          const urow = j * cols;
          const e = W[o + j]! / U[urow + j]!; // δ = −w_j/[H⁻¹]_jj · H⁻¹_{j,:} = −(w_j/U_jj) · U_{j,:}
          W[o + j] = 0;
          if (e === 0) continue;
          E[r * B + (j - i1)] = e;
          errSq += e * e;
          for (let c = j + 1; c < i2; c++) W[o + c]! -= e * U[urow + c]!;
        }
      }
    }
    if (i2 < cols) lazyUpdate(W, U, E, rows, cols, B, i1, i2);
  }
  // Pruned entries are exactly zero; the survivors carry the OBS compensation.
  let diffSq = 0;
  for (let i = 0; i < W.length; i++) diffSq += (W1[i]! - W[i]!) ** 2;
  return { weights: W, reconstructionError: Math.max(0, (tokens / 2) * (errSq - lambda * diffSq)), deadInputs: dead.length };
}

/** w²/U_jj² for columns [from, to), as a [rows, to − from] matrix. */
function saliency(W: Float64Array, U: Float64Array, rows: number, cols: number, from: number, to: number): Float64Array {
  const width = to - from;
  const inv = new Float64Array(width);
  for (let c = 0; c < width; c++) inv[c] = 1 / U[(from + c) * cols + from + c]! ** 2;
  const s = new Float64Array(rows * width);
  for (let r = 0; r < rows; r++) {
    const o = r * cols + from;
    for (let c = 0; c < width; c++) s[r * width + c] = W[o + c]! ** 2 * inv[c]!;
  }
  return s;
}

/** Adaptive mask selection over columns [from, to): exactly the block's share of the matrix count. */
function selectUnstructured(W: Float64Array, U: Float64Array, rows: number, cols: number, from: number, to: number, sparsity: number, mask: Uint8Array): void {
  const width = to - from;
  const scores = saliency(W, U, rows, cols, from, to);
  const local = new Uint8Array(rows * width);
  markSmallest(scores, countFor(sparsity, rows, from, to), local);
  for (let r = 0; r < rows; r++) for (let c = 0; c < width; c++) if (local[r * width + c]) mask[r * cols + from + c] = 1;
}

/**
 * W[:, i2:] −= E · U[i1:i2, i2:], row by row over the non-zero errors only (about a `sparsity`
 * share of them), four error terms per pass so each W entry is loaded and stored once per four.
 */
function lazyUpdate(W: Float64Array, U: Float64Array, E: Float64Array, rows: number, cols: number, B: number, i1: number, i2: number): void {
  const ks = new Int32Array(B);
  const es = new Float64Array(B);
  for (let r = 0; r < rows; r++) {
    let m = 0;
    for (let k = 0; k < i2 - i1; k++) {
      const e = E[r * B + k]!;
      if (e !== 0) {
        ks[m] = (i1 + k) * cols;
        es[m++] = e;
      }
    }
    const o = r * cols;
    let t = 0;
    for (; t + 4 <= m; t += 4) {
      const u0 = ks[t]!, u1 = ks[t + 1]!, u2 = ks[t + 2]!, u3 = ks[t + 3]!;
      const e0 = es[t]!, e1 = es[t + 1]!, e2 = es[t + 2]!, e3 = es[t + 3]!;
      for (let c = i2; c < cols; c++) W[o + c]! -= e0 * U[u0 + c]! + e1 * U[u1 + c]! + e2 * U[u2 + c]! + e3 * U[u3 + c]!;
    }
    for (; t < m; t++) {
      const u = ks[t]!;
      const e = es[t]!;
      for (let c = i2; c < cols; c++) W[o + c]! -= e * U[u + c]!;
    }
  }
}

/**
 * SparseGPT's options (sparsity or N:M pattern, block sizes, dampening, calibration mode), read and
 * checked; shared with fair-sparsegpt, which adds its pair options. The caller ends the reader.
 */
export function readSparseGptOptions(r: OptionReader, raw: RawOptions, where: string): SparseGptOptions {
  const sp = readSparsityOrPattern(r, raw, where);
  const o: SparseGptOptions = {
    ...sp,
    block_size: r.int('block_size', 128, [1, 1 << 20]),
    mask_block_size: r.int('mask_block_size', 128, [1, 1 << 20]),
    dampening_frac: r.num('dampening_frac', 0.01, [0, 100]),
    calibration: r.oneOf('calibration', CALIBRATION_MODES, 'sequential'),
  };
  if (o.block_size % o.mask_block_size !== 0 && o.mask_block_size % o.block_size !== 0) {
    throw new DikeError('recipe', `${where} "mask_block_size"`, `one of block_size (${o.block_size}) and mask_block_size (${o.mask_block_size}) must divide the other`);
  }
  if (o.pattern !== undefined && o.block_size % parsePattern(o.pattern).m !== 0) {
    throw new DikeError('recipe', `${where} "block_size"`, `must be a multiple of M in the pattern ${o.pattern}, found ${o.block_size}`);
  }
  return o;
}

export const sparsegpt: Method<SparseGptOptions> = {
  name: 'sparsegpt',
  description: 'one-shot OBS pruning with a Cholesky-factored inverse Hessian, unstructured or N:M (weights of survivors updated)',
  reference: 'Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot", Algorithm 1',
  needsCalibration: true,
  parseOptions(raw, where) {
    const r = new OptionReader(raw, 'recipe', where);
    const o = readSparseGptOptions(r, raw, where);
    r.done();
    return o;
  },
  async apply(ctx, opts) {
    const reports: MatrixReport[] = [];
    const nm = opts.pattern !== undefined ? parsePattern(opts.pattern) : undefined;
    if (nm === undefined && opts.sparsity === 0) {
      // Nothing to remove: the weights stay bit-identical (no dead-input zeroing, no calibration run).
      for (const t of ctx.targets) reports.push({ weight: t.weight, method: 'sparsegpt', sparsity: zeroFraction(ctx.params.get(t.weight)!.data) });
      return reports;
    }
    // Sequential as the reference (llama_sequential / opt_sequential): the maps of a block are pruned on
    // the block's inputs with every earlier block already pruned.
    await ctx.walk({ mode: opts.calibration, granularity: 'block' }, async (targets, stats) => {
      for (const t of targets) {
        const p = ctx.params.get(t.weight)!;
        const s = stats.get(t.weight);
        if (s === undefined) throw new DikeError('recipe', `sparsegpt "${t.weight}"`, 'no calibration statistics for this matrix');
        const w = toOutIn(p, t);
        if (nm !== undefined) checkNM(w.cols, nm.m, t.weight, 'sparsegpt');
        const res = sparseGptMatrix(w.data, w.rows, w.cols, s.gram, s.tokens, {
          ...(opts.sparsity !== undefined ? { sparsity: opts.sparsity } : {}),
          ...(nm !== undefined ? { nm } : {}),
          blockSize: opts.block_size,
          maskBlockSize: opts.mask_block_size,
          dampeningFrac: opts.dampening_frac,
        });
        w.data.set(res.weights);
        fromOutIn(w, p, t);
        ctx.quantized.delete(t.weight); // updated values leave the integer grid
        reports.push({
          weight: t.weight,
          method: 'sparsegpt',
          sparsity: zeroFraction(p.data),
          detail: {
            ...(opts.pattern !== undefined ? { pattern: opts.pattern } : {}),
            reconstruction_error: res.reconstructionError,
            calibration: opts.calibration,
            calibration_tokens: s.tokens,
            dead_inputs: res.deadInputs,
          },
        });
      }
    });
    return reports;
  },
};
