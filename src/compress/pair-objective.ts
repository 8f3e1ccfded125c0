/**
 * The layer-wise objective shared by the bias-aware pruning methods (fair-sparsegpt, fair-wanda):
 * Fair-GPTQ's (Proskurina, Metzler & Velcin 2025, arXiv 2509.15206, §3) with the pruned matrix Ŵ in
 * place of the quantized one. With G = Σ x xᵀ over the pair sentences' tokens and D = Σ ΔΔᵀ,
 * Δ = x₀ − x₁ position by position over the K pairs (InputStats.gram, .pairGram):
 *
 *   F(Ŵ) = ‖(W − Ŵ)X‖² + 2α‖ŴΔ‖² = tr((W − Ŵ) G (W − Ŵ)ᵀ) + 2α tr(Ŵ D Ŵᵀ)
 *
 * i.e. the paper's H = (1/K) Σ (X0X0ᵀ + X1X1ᵀ) and H_x01 = (2α/K) Σ ΔΔᵀ in the ratio G : 2αD, whose
 * Hessian is ∝ G + 2αD (fair-gptq.ts: H_x01 = 4αD/n in Dikē's scale H = 2G/n).
 *
 * The pair options (pairs, pairs_limit, protocol, select_layers, ignore) mean what they mean for
 * fair-gptq; the calibration set is built by its pairCalibration, and α per matrix by its alphaFor.
 */
import { OptionReader } from './options.js';
import { DikeError } from '../errors.js';
import { Gemm } from './gemm.js';
import { toOutIn, type CompressContext, type OutIn } from './types.js';
import type { CalibrationMode, InputStats } from './calibration-types.js';
import type { LinearInfo } from '../model/arch/types.js';
import type { Param } from '../model/checkpoint.js';
import { alphaFor, pairCalibration, selectedLayers } from './methods/fair-gptq.js';

export interface PairOptions {
  alpha: number;
  pairs: string;
  pairs_limit?: number;
  protocol: 'dike' | 'authors';
  select_layers: string;
  ignore: string;
}

export function readPairOptions(r: OptionReader, raw: Record<string, unknown>, where: string, alphaDefault: number): PairOptions {
  const o: PairOptions = {
    alpha: r.num('alpha', alphaDefault, [0, 1e6]),
    pairs: r.str('pairs', 'stereoset'),
    ...(raw['pairs_limit'] !== undefined ? { pairs_limit: r.int('pairs_limit', undefined, [1, 1 << 30]) } : {}),
    protocol: r.oneOf('protocol', ['dike', 'authors'] as const, 'dike'),
    select_layers: r.str('select_layers', 'all'),
    ignore: r.str('ignore', 'none'),
  };
  if (o.ignore === 'none') o.ignore = '';
  if (!['all', 'lower', 'upper', 'lower-upper'].includes(o.select_layers) && !/^\s*\d+(\s*[,+]\s*\d+)*\s*$/.test(o.select_layers)) {
    throw new DikeError('recipe', `${where} "select_layers"`, `expected all, lower, upper, lower-upper or block indices "0,1,…", found "${o.select_layers}"`);
  }
  return o;
}

/** tr(A M Aᵀ) for A [rows, cols] and a symmetric M [cols, cols], in float64 (plain loops). */
export function quadraticForm(A: ArrayLike<number>, M: Float64Array, rows: number, cols: number): number {
  let total = 0;
  const am = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    am.fill(0);
    for (let i = 0; i < cols; i++) {
      const a = A[o + i]!;
      if (a === 0) continue;
      const mi = i * cols;
      for (let j = 0; j < cols; j++) am[j]! += a * M[mi + j]!;
    }
    for (let j = 0; j < cols; j++) total += am[j]! * A[o + j]!;
  }
  return total;
}

/** The two terms of F(Ŵ): reconstruction ‖(W − Ŵ)X‖² and bias ‖ŴΔ‖² (unweighted). */
export function pairObjectiveTerms(W: ArrayLike<number>, What: ArrayLike<number>, G: Float64Array, D: Float64Array, rows: number, cols: number): { reconstruction: number; bias: number } {
  const diff = new Float64Array(rows * cols);
  for (let i = 0; i < diff.length; i++) diff[i] = W[i]! - What[i]!;
  return { reconstruction: quadraticForm(diff, G, rows, cols), bias: quadraticForm(What, D, rows, cols) };
}

/** What walkPairTargets hands a fair pruning method for one matrix. */
export interface PairTarget {
  info: LinearInfo;
  param: Param;
  /** The weights in [out, in] orientation (write back with fromOutIn). */
  w: OutIn;
  /** Pair statistics: gram = G, pairGram = D, tokens, pairs. */
  stats: InputStats & { pairGram: Float64Array };
  /** α of this matrix (0 where select_layers / ignore exempt it). */
  alpha: number;
  /** SHA-256 of the pair calibration set's tokens (for the report). */
  pairTokensSha256: string;
}

/**
 * The calibration walk shared by the fair pruning methods: builds the pair calibration set (fair-gptq's
 * pairCalibration), walks it with pair statistics, and visits every target matrix with its [out, in]
 * weights, statistics and α.
 */
export async function walkPairTargets(
  ctx: CompressContext,
  opts: PairOptions & { calibration: CalibrationMode },
  method: string,
  visit: (t: PairTarget, gemm: Gemm) => Promise<void>,
): Promise<void> {
  const set = pairCalibration(ctx, opts, method);
  const layers = selectedLayers(opts.select_layers, ctx.shape.numLayers, method);
  const gemm = new Gemm(ctx.threads);
  try {
    await ctx.walk({ mode: opts.calibration, granularity: 'block', pairs: true, set }, async (targets, stats) => {
      for (const info of targets) {
        const s = stats.get(info.weight);
        if (s === undefined || s.pairGram === undefined) throw new DikeError('recipe', `${method} "${info.weight}"`, 'no pair statistics for this matrix');
        const param = ctx.params.get(info.weight)!;
        await visit({ info, param, w: toOutIn(param, info), stats: s as InputStats & { pairGram: Float64Array }, alpha: alphaFor(info, opts, layers), pairTokensSha256: set.hash }, gemm);
      }
    });
  } finally {
    await gemm.dispose();
  }
}
