/**
 * Fair Wanda: Wanda's per-row pruning (Sun, Liu, Bair & Kolter 2024, eq. 1; wanda.ts) with the score
 * replaced by the exact change of the fair layer objective (pair-objective.ts, the Fair-GPTQ term
 * of Proskurina, Metzler & Velcin 2025, arXiv 2509.15206, §3)
 *   F(Ŵ) = ‖(W − Ŵ)X‖² + 2α‖ŴΔ‖²,  G = Σ x xᵀ,  D = Σ ΔΔᵀ (Δ = x₀ − x₁ over sentence pairs)
 * when weight W_ij alone is removed (Ŵ = W − W_ij e_i e_jᵀ):
 *
 *   S_ij = F(Ŵ) − F(W) = W_ij² G_jj + 2α (W_ij² D_jj − 2 W_ij (W D)_ij)
 *
 * The first term is Wanda's score squared (|W_ij|·‖X_j‖)²; the α term is negative for a weight that
 * carries the row's pair difference (removing it shrinks ‖W_i Δ‖²), so such weights go first. Like
 * Wanda, no cross terms between removed weights and no update of the survivors. The lowest S in each
 * row is pruned (or, for N:M, in each group of M inputs of a row). α = 0: S = Wanda's score, written
 * as Wanda writes it (|W_ij|·‖X_j‖, the square root of the same number), so the mask is Wanda's.
 *
 * Calibration: like fair-gptq, on the sentence pairs only (G and D from one paired walk), sequential
 * block by block (default, as Wanda's reference) or one-shot; α per matrix by select_layers / ignore.
 */
import { DikeError } from '../../errors.js';
import { checkNM, countFor, markNM, markSmallest, parsePattern } from '../mask.js';
import { OptionReader } from '../options.js';
import { CALIBRATION_MODES, type CalibrationMode } from '../calibrate.js';
import { type Method, type MatrixReport, fromOutIn, zeroFraction } from '../types.js';
import { readSparsityOrPattern } from './wanda.js';
import { pairObjectiveTerms, readPairOptions, walkPairTargets, type PairOptions } from '../pair-objective.js';

export interface FairWandaOptions extends PairOptions {
  sparsity?: number;
  pattern?: string;
  calibration: CalibrationMode;
}

/** S_ij for an [rows, cols] matrix (see the header); `WD` = W·D ([rows, cols]), unused when α = 0. */
export function fairWandaScores(W: ArrayLike<number>, rows: number, cols: number, G: Float64Array, D: Float64Array, WD: Float64Array | undefined, alpha: number): Float64Array {
  const s = new Float64Array(rows * cols);
  if (alpha === 0) {
    const norm = new Float64Array(cols);
    for (let j = 0; j < cols; j++) norm[j] = Math.sqrt(Math.max(0, G[j * cols + j]!));
    for (let r = 0; r < rows; r++) for (let j = 0; j < cols; j++) s[r * cols + j] = Math.abs(W[r * cols + j]!) * norm[j]!;
    return s;
  }
  if (WD === undefined) throw new DikeError('recipe', 'fair-wanda', 'W·D is needed when α > 0');
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < cols; j++) {
      const i = r * cols + j;
      const w = W[i]!;
      s[i] = w * w * G[j * cols + j]! + 2 * alpha * (w * w * D[j * cols + j]! - 2 * w * WD[i]!);
    }
  }
  return s;
}

/** The per-row (or N:M) mask of the lowest scores, with Wanda's counts. */
export function rowMask(scores: Float64Array, rows: number, cols: number, opts: { sparsity?: number; nm?: { n: number; m: number } }): Uint8Array {
  const mask = new Uint8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    if (opts.nm) markNM(scores, cols, r, 0, cols, opts.nm.n, opts.nm.m, mask);
    else markSmallest(scores.subarray(r * cols, (r + 1) * cols), countFor(opts.sparsity!, cols, r, r + 1), mask.subarray(r * cols, (r + 1) * cols));
  }
  return mask;
}

export const fairWanda: Method<FairWandaOptions> = {
  name: 'fair-wanda',
  description: 'Wanda with the score W²‖X‖² + 2α(W²‖Δ‖² − 2W(WD)): the exact change of ‖(W − Ŵ)X‖² + 2α‖ŴΔ‖² when one weight is removed (Δ = pair difference)',
  reference: 'Sun et al. 2024 (Wanda, eq. 1) with the H_x01 = (2α/K) Σ (X0 − X1)(X0 − X1)ᵀ term of Proskurina, Metzler & Velcin 2025 (Fair-GPTQ, arXiv 2509.15206, §3): S_ij = W_ij² G_jj + 2α(W_ij² D_jj − 2 W_ij (W D)_ij)',
  needsCalibration: false, // calibrated on its own sentence pairs
  parseOptions(raw, where) {
    const r = new OptionReader(raw, 'recipe', where);
    const o: FairWandaOptions = { ...readSparsityOrPattern(r, raw, where), ...readPairOptions(r, raw, where, 0.5), calibration: r.oneOf('calibration', CALIBRATION_MODES, 'sequential') };
    r.done();
    return o;
  },
  async apply(ctx, opts) {
    const reports: MatrixReport[] = [];
    const nm = opts.pattern !== undefined ? parsePattern(opts.pattern) : undefined;
    await walkPairTargets(ctx, opts, 'fair-wanda', async ({ info: t, param: p, w, stats: s, alpha, pairTokensSha256 }, gemm) => {
      const { rows, cols } = w;
      if (nm) checkNM(cols, nm.m, t.weight, 'fair-wanda');
      const W0 = Float64Array.from(w.data);
      const WD = alpha === 0 ? undefined : await gemm.product(W0, s.pairGram, rows, cols, cols);
      const mask = rowMask(fairWandaScores(W0, rows, cols, s.gram, s.pairGram, WD, alpha), rows, cols, nm ? { nm } : { sparsity: opts.sparsity! });
      let pruned = 0;
      for (let i = 0; i < mask.length; i++) {
        if (mask[i]) {
          w.data[i] = 0;
          pruned++;
        }
      }
      const terms = pairObjectiveTerms(W0, w.data, s.gram, s.pairGram, rows, cols);
      if (pruned > 0) {
        fromOutIn(w, p, t);
        ctx.quantized.delete(t.weight);
      }
      reports.push({
        weight: t.weight,
        method: 'fair-wanda',
        sparsity: zeroFraction(p.data),
        detail: {
          comparison_group: nm ? `row, ${opts.pattern}` : 'row',
          pruned,
          alpha,
          pairs: s.pairs ?? 0,
          reconstruction_error: terms.reconstruction,
          bias_WdX_sq: pairObjectiveTerms(W0, W0, s.gram, s.pairGram, rows, cols).bias,
          bias_QdX_sq: terms.bias,
          calibration: opts.calibration,
          protocol: opts.protocol,
          pair_tokens_sha256: pairTokensSha256,
        },
      });
    });
    return reports;
  },
};
