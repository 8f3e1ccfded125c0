/**
 * Fair SparseGPT: SparseGPT (Frantar & Alistarh 2023, Algorithm 1; sparsegpt.ts) on the objective of
 * joint Fair-GPTQ (pair-objective.ts; Proskurina, Metzler & Velcin 2025, arXiv 2509.15206, §3, with
 * the pruned Ŵ in place of the quantized one):
 *
 *   F(Ŵ) = ‖(W − Ŵ)X‖² + 2α‖ŴΔ‖²,   Ŵ with the requested sparsity.
 *
 * Derivation. In Hessian scale (H = 2G/n, H_x01 = 4αD/n, as fair-gptq.ts) and up to a constant
 *   F ∝ (Ŵ − W) H (Ŵ − W)ᵀ + Ŵ H_x01 Ŵᵀ = (Ŵ − W*) H₂ (Ŵ − W*)ᵀ + const,
 *   H₂ = H + H_x01,   W* = W·H·H₂⁻¹ = W − W·H_x01·H₂⁻¹   (the dense minimiser of F).
 * So the fair problem is plain SparseGPT with Hessian H₂ and target W*: the saliency w²/[H₂⁻¹]_jj
 * and the OBS update δ = −w_j/[H₂⁻¹]_jj · H₂⁻¹_{j,:} are taken on W* and H₂. Dampening as SparseGPT's:
 * λ = dampening_frac · mean diag H₂ added to both H and H₂ (so W* = W·(H + λI)·(H₂ + λI)⁻¹, the
 * minimiser of the dampened objective, and α = 0 gives W* = W, H₂ = H: SparseGPT exactly).
 *
 * Calibration: like fair-gptq, on the sentence pairs only (G and D from the same paired walk; the
 * recipe's calibration text is not read), sequential block by block (default) or one-shot.
 * α is applied per matrix as fair-gptq's select_layers / ignore decide (α = 0: plain SparseGPT on
 * the pairs).
 */
import { DikeError } from '../../errors.js';
import { Gemm, choleskyInverseUpperBlocked } from '../gemm.js';
import { checkNM, parsePattern } from '../mask.js';
import { OptionReader } from '../options.js';
import { type Method, type MatrixReport, fromOutIn, zeroFraction } from '../types.js';
import { readSparseGptOptions, sparseGptMatrix, type SparseGptOptions } from './sparsegpt.js';
import { pairObjectiveTerms, readPairOptions, walkPairTargets, type PairOptions } from '../pair-objective.js';

export interface FairSparseGptOptions extends PairOptions, SparseGptOptions {}

export interface FairSparseGptResult {
  weights: Float64Array;
  /** The dense minimiser W* of F that SparseGPT prunes. */
  target: Float64Array;
  /** ‖(W − Ŵ)X‖² and ‖ŴΔ‖², ‖WΔ‖² (dense), on the pair statistics. */
  reconstruction: number;
  bias: number;
  biasDense: number;
  deadInputs: number;
}

/**
 * W* = W − W·H_x01·(H₂ + λI)⁻¹ with H = 2G/n, H_x01 = 4αD/n, H₂ = H + H_x01, λ = frac·mean diag H₂
 * (after the dead-input fix). Also returns G₂ = G + 2αD (H₂ = 2G₂/n).
 */
export async function fairTarget(gemm: Gemm, W: ArrayLike<number>, rows: number, cols: number, G: Float64Array, D: Float64Array, tokens: number, alpha: number, dampeningFrac: number): Promise<{ target: Float64Array; gram2: Float64Array }> {
  const Wd = Float64Array.from(W);
  if (alpha === 0) return { target: Wd, gram2: G };
  const gram2 = new Float64Array(cols * cols);
  for (let i = 0; i < gram2.length; i++) gram2[i] = G[i]! + 2 * alpha * D[i]!;
  const H2 = new Float64Array(cols * cols);
  for (let i = 0; i < H2.length; i++) H2[i] = (2 * gram2[i]!) / tokens;
  const Hx = new Float64Array(cols * cols);
  for (let i = 0; i < Hx.length; i++) Hx[i] = (4 * alpha * D[i]!) / tokens;
  const { U } = await choleskyInverseUpperBlocked(gemm, H2, cols, dampeningFrac); // (H₂ + λI)⁻¹ = UᵀU
  const WH = await gemm.product(Wd, Hx, rows, cols, cols);
  const WHU = await gemm.product(WH, U, rows, cols, cols, { transB: true });
  const dW = await gemm.product(WHU, U, rows, cols, cols);
  const target = new Float64Array(rows * cols);
  for (let i = 0; i < target.length; i++) target[i] = Wd[i]! - dW[i]!;
  return { target, gram2 };
}

/** Fair SparseGPT on one [out, in] matrix: SparseGPT on (W*, G₂). Pure: returns new weights. */
export async function fairSparseGptMatrix(
  gemm: Gemm,
  W0: ArrayLike<number>,
  rows: number,
  cols: number,
  G: Float64Array,
  D: Float64Array,
  tokens: number,
  alpha: number,
  opts: { sparsity?: number; nm?: { n: number; m: number }; blockSize: number; maskBlockSize: number; dampeningFrac: number },
): Promise<FairSparseGptResult> {
  if (!(tokens > 0)) throw new DikeError('recipe', 'fair-sparsegpt', 'calibration saw no tokens');
  const { target, gram2 } = await fairTarget(gemm, W0, rows, cols, G, D, tokens, alpha, opts.dampeningFrac);
  const res = sparseGptMatrix(target, rows, cols, gram2, tokens, opts);
  const terms = pairObjectiveTerms(W0, res.weights, G, D, rows, cols);
  return { weights: res.weights, target, reconstruction: terms.reconstruction, bias: terms.bias, biasDense: pairObjectiveTerms(W0, W0, G, D, rows, cols).bias, deadInputs: res.deadInputs };
}

export const fairSparsegpt: Method<FairSparseGptOptions> = {
  name: 'fair-sparsegpt',
  description: 'SparseGPT on the Fair-GPTQ objective ‖(W − Ŵ)X‖² + 2α‖Ŵ(X0 − X1)‖² over sentence pairs (OBS with H + H_x01, target its dense minimiser)',
  reference: 'Frantar & Alistarh 2023 (SparseGPT, Algorithm 1) with the H_x01 = (2α/K) Σ (X0 − X1)(X0 − X1)ᵀ term of Proskurina, Metzler & Velcin 2025 (Fair-GPTQ, arXiv 2509.15206, §3): OBS on H + H_x01, target W·H·(H + H_x01)⁻¹',
  needsCalibration: false, // calibrated on its own sentence pairs
  parseOptions(raw, where) {
    const r = new OptionReader(raw, 'recipe', where);
    const o: FairSparseGptOptions = { ...readSparseGptOptions(r, raw, where), ...readPairOptions(r, raw, where, 0.5) };
    r.done();
    return o;
  },
  async apply(ctx, opts) {
    const reports: MatrixReport[] = [];
    const nm = opts.pattern !== undefined ? parsePattern(opts.pattern) : undefined;
    if (nm === undefined && opts.sparsity === 0) {
      for (const t of ctx.targets) reports.push({ weight: t.weight, method: 'fair-sparsegpt', sparsity: zeroFraction(ctx.params.get(t.weight)!.data) });
      return reports;
    }
    await walkPairTargets(ctx, opts, 'fair-sparsegpt', async ({ info: t, param: p, w, stats: s, alpha, pairTokensSha256 }, gemm) => {
      if (nm !== undefined) checkNM(w.cols, nm.m, t.weight, 'fair-sparsegpt');
      const res = await fairSparseGptMatrix(gemm, w.data, w.rows, w.cols, s.gram, s.pairGram, s.tokens, alpha, {
        ...(opts.sparsity !== undefined ? { sparsity: opts.sparsity } : {}),
        ...(nm !== undefined ? { nm } : {}),
        blockSize: opts.block_size,
        maskBlockSize: opts.mask_block_size,
        dampeningFrac: opts.dampening_frac,
      });
      w.data.set(res.weights);
      fromOutIn(w, p, t);
      ctx.quantized.delete(t.weight);
      reports.push({
        weight: t.weight,
        method: 'fair-sparsegpt',
        sparsity: zeroFraction(p.data),
        detail: {
          ...(opts.pattern !== undefined ? { pattern: opts.pattern } : {}),
          alpha,
          pairs: s.pairs ?? 0,
          reconstruction_error: res.reconstruction,
          bias_WdX_sq: res.biasDense,
          bias_QdX_sq: res.bias,
          calibration: opts.calibration,
          protocol: opts.protocol,
          pair_tokens_sha256: pairTokensSha256,
          dead_inputs: res.deadInputs,
        },
      });
    });
    return reports;
  },
};
