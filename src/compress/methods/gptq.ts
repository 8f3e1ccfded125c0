/**
 * GPTQ (Frantar, Ashkboos, Hoefler & Alistarh 2023, "GPTQ: Accurate Post-Training Quantization for
 * Generative Pre-trained Transformers", Algorithm 1), on the same grid as RTN (quantizer.ts).
 *
 * Per linear map with inputs X (calibration tokens as columns):
 *   H = 2 X Xᵀ / n                                   (§3, the layer-wise objective's Hessian)
 *   dead inputs (H_jj = 0): H_jj := 1 and W[:, j] := 0 (they read nothing)
 *   H̃ = H + λI, λ = dampening_frac · mean diag H              (§3 "Cholesky reformulation", percdamp)
 *   U = upper Cholesky factor of H̃⁻¹ (H̃⁻¹ = UᵀU)    (eq. 5 → Algorithm 1, line "H⁻¹ ← Cholesky(H⁻¹)ᵀ")
 *   for each column j in order, blocks of B = 128 columns:
 *     q_j = quant(w_j);  e_j = (w_j − q_j) / U_jj;  W[:, j:] −= e_j U[j, j:]   (Algorithm 1 inner loop)
 *   the updates of a block to later columns are applied lazily, once per block, as one matrix
 *   product W[:, i₂:] −= E · U[i₁:i₂, i₂:]  (§3 "Lazy batch-updates"); within a block the same
 *   scheme is applied again in sub-blocks of 32 (and within those, each column collects the updates
 *   of the columns before it), which changes only the order of the additions.
 *
 * Choices, as the reference implementations make them (IST-DASLab/gptq `fasterquant`, AutoGPTQ):
 *   - group_size g: a group's scale and zero are computed from the current weights when the block
 *     containing the group's first column starts (the reference calls find_params on W[:, j:j+g]
 *     at column j, with W holding every earlier block's update but not yet this block's).
 *     Per-channel grids are computed once from the original weights, before dead inputs are zeroed.
 *   - act_order: columns in order of decreasing H_jj (ties by index), undone at the end. With
 *     groups, the reference's `static_groups` is used: each contiguous group of g original columns
 *     gets its grid from the (dead-zeroed) original weights before any update, so that the groups of
 *     the stored integer form stay contiguous and a column's grid does not depend on the order (this
 *     is also llm-compressor's "weight" activation ordering). `static_groups: true` asks for the
 *     same without act_order (llm-compressor's default for groups).
 *   - symmetric default true (AutoGPTQ, llm-compressor W4A16); dampening_frac 0.01; block_size 128.
 *
 * Calibration (`calibration`): `sequential` (default) as GPTQ's reference code and GPTQModel's
 * `true_sequential` run it: block by block, and inside a block group by group (the architecture's
 * LinearInfo.seqGroup, Llama [k,v,q] [o] [up,gate] [down]), each group's H computed with everything
 * before it already quantized; `one-shot`: every target's H from the model as the step began.
 * `symmetric_range: reference` reproduces the reference grid exactly (quantizer.ts Grid).
 *
 * The report's `error` is ‖(W − Ŵ)X‖² over the calibration tokens, exact and free: with
 * (W' − Ŵ) = E U and UᵀU = H̃⁻¹, Σ e² = tr((W' − Ŵ) H̃ (W' − Ŵ)ᵀ), so
 * ‖(W − Ŵ)X‖² = n/2 · (Σ e² − λ‖W' − Ŵ‖²), where W' is W with dead inputs zeroed (X is zero there).
 */
import { DikeError } from '../../errors.js';
import { Gemm, block, choleskyInverseUpperBlocked } from '../gemm.js';
import { OptionReader } from '../options.js';
import { dequantize, emptyState, findParamsT, grid, groupCount, quantizeCode, type Grid } from '../quantizer.js';
import { fromOutIn, type InputStats, type Method, type MatrixReport, type QuantState } from '../types.js';
import { assertFinite, readQuantOptions, type QuantOptions } from './rtn.js';
import type { LinearInfo } from '../../model/arch/types.js';
import type { Param } from '../../model/checkpoint.js';
import { CALIBRATION_MODES, type CalibrationMode } from '../calibrate.js';
import type { CompressContext } from '../types.js';

export interface GptqOptions extends QuantOptions {
  /** λ as a fraction of mean diag H (the name llm-compressor and our SparseGPT use). */
  dampening_frac: number;
  act_order: boolean;
  static_groups: boolean;
  block_size: number;
  calibration: CalibrationMode;
  /** `reference`: the GPTQ reference's symmetric range (quantizer.ts Grid.referenceSymmetric). */
  symmetric_range: 'full' | 'reference';
}

/** Sub-block width inside a lazy-update block: small enough that the JavaScript part is cheap. */
const SUB_BLOCK = 32;

/** What GPTQ needs from one input Gram matrix; shared by the maps that read the same input (q, k, v). */
export interface PreparedHessian {
  n: number;
  tokens: number;
  /** Column order (act_order), or null for the identity. */
  perm: Int32Array | null;
  /** Inputs never active on the calibration set, in original column order. */
  dead: Uint8Array;
  /** Upper U with (H̃ in the processing order)⁻¹ = UᵀU, n×n row-major. */
  U: Float64Array;
  lambda: number;
}

export async function prepareHessian(gemm: Gemm, stats: InputStats, damp: number, actOrder: boolean, where = ''): Promise<PreparedHessian> {
  const n = stats.dim;
  if (!(stats.tokens > 0)) throw new DikeError(where, 'calibration', 'no calibration token reached this matrix');
  const H = new Float64Array(n * n);
  const f = 2 / stats.tokens;
  for (let i = 0; i < n * n; i++) H[i] = f * stats.gram[i]!;
  const dead = new Uint8Array(n);
  for (let j = 0; j < n; j++) if (H[j * n + j] === 0) dead[j] = 1;
  let perm: Int32Array | null = null;
  let Hp = H;
  if (actOrder) {
    // Decreasing H_jj, the dead fix (H_jj = 1) applied first as in the reference; ties by index.
    const diag = (j: number): number => (dead[j] ? 1 : H[j * n + j]!);
    perm = Int32Array.from({ length: n }, (_, j) => j).sort((a, b) => diag(b) - diag(a) || a - b);
    Hp = new Float64Array(n * n);
    for (let i = 0; i < n; i++) {
      const src = perm[i]! * n;
      for (let j = 0; j < n; j++) Hp[i * n + j] = H[src + perm[j]!]!;
    }
  }
  try {
    const { U, lambda } = await choleskyInverseUpperBlocked(gemm, Hp, n, damp, { overwrite: true }); // Hp is ours
    return { n, tokens: stats.tokens, perm, dead, U, lambda };
  } catch (e) {
    if (e instanceof DikeError) throw new DikeError(where, 'inverse Hessian', `${e.problem} (dampening_frac ${damp})`);
    throw e;
  }
}

export interface GptqResult {
  /** Ŵ, [rows, cols] row-major ([out, in]). */
  weights: Float32Array;
  state: QuantState;
  /** ‖(W − Ŵ)X‖² over the calibration tokens. */
  error: number;
}

/**
 * GPTQ of one [rows, cols] ([out, in]) matrix against a prepared Hessian. The working copy is held
 * transposed, Wᵀ [cols, rows] in float64, so that a column of W is a contiguous row and the
 * lazy update W[:, i₂:] −= E·U[i₁:i₂, i₂:] is Wᵀ[i₂:] −= U[i₁:i₂, i₂:]ᵀ·Eᵀ on a contiguous tail.
 */
export async function gptqMatrix(
  gemm: Gemm,
  W: Float32Array,
  rows: number,
  cols: number,
  h: PreparedHessian,
  opts: Pick<GptqOptions, 'bits' | 'group_size' | 'symmetric' | 'static_groups' | 'block_size'> & { symmetric_range?: GptqOptions['symmetric_range'] },
): Promise<GptqResult> {
  if (h.n !== cols) throw new DikeError('', 'gptq', `Hessian is ${h.n}×${h.n} but the matrix has ${cols} input columns`);
  const g: Grid = grid(opts.bits, opts.symmetric, opts.symmetric_range === 'reference');
  const state = emptyState(g, rows, cols, opts.group_size);
  const gs = state.groupSize;
  const groups = groupCount(cols, gs);
  const grouped = groups > 1;
  // Activation order comes with the prepared Hessian (its permutation), and implies static groups.
  const staticGroups = grouped && (opts.static_groups || h.perm !== null);
  const { perm, dead, U } = h;

  // Wᵀ in original column order.
  const W0 = new Float64Array(cols * rows);
  transpose(W, rows, cols, W0);
  if (!grouped) findParamsT(g, W0, rows, 0, cols, state.scales, state.zeros, 1, 0);
  for (let c = 0; c < cols; c++) if (dead[c]) W0.fill(0, c * rows, (c + 1) * rows);
  if (staticGroups) {
    for (let k = 0; k < groups; k++) findParamsT(g, W0, rows, k * gs, Math.min(cols, (k + 1) * gs), state.scales, state.zeros, groups, k);
  }
  // Processing order.
  let WT = W0;
  if (perm) {
    WT = new Float64Array(cols * rows);
    for (let j = 0; j < cols; j++) WT.set(W0.subarray(perm[j]! * rows, (perm[j]! + 1) * rows), j * rows);
  }
  const gidx = Int32Array.from({ length: cols }, (_, j) => Math.floor((perm ? perm[j]! : j) / gs));
  const codesT = new Uint8Array(cols * rows);
  const B = opts.block_size;
  const E = new Float64Array(Math.min(B, cols) * rows);
  const sc = new Float64Array(rows);
  const zp = new Float64Array(rows);
  let errSq = 0;

  for (let i1 = 0; i1 < cols; i1 += B) {
    const i2 = Math.min(i1 + B, cols);
    if (grouped && !staticGroups) {
      // Grids of the groups that start in this block, from the weights as the block starts.
      for (let j = Math.ceil(i1 / gs) * gs; j < i2; j += gs) findParamsT(g, WT, rows, j, Math.min(cols, j + gs), state.scales, state.zeros, groups, j / gs);
    }
    for (let s1 = i1; s1 < i2; s1 += SUB_BLOCK) {
      const s2 = Math.min(s1 + SUB_BLOCK, i2);
      for (let j = s1; j < s2; j++) {
        const d = U[j * cols + j]!;
        const off = j * rows;
        const eoff = (j - i1) * rows;
        // Feedback from the columns of this sub-block already done (left-looking, four at a time).
        let m = s1;
        for (; m + 4 <= j; m += 4) {
          const u0 = U[m * cols + j]!, u1 = U[(m + 1) * cols + j]!, u2 = U[(m + 2) * cols + j]!, u3 = U[(m + 3) * cols + j]!;
          const e0 = (m - i1) * rows, e1 = e0 + rows, e2 = e1 + rows, e3 = e2 + rows;
          for (let r = 0; r < rows; r++) WT[off + r]! -= u0 * E[e0 + r]! + u1 * E[e1 + r]! + u2 * E[e2 + r]! + u3 * E[e3 + r]!;
        }
        for (; m < j; m++) {
          const u = U[m * cols + j]!;
          const e0 = (m - i1) * rows;
          for (let r = 0; r < rows; r++) WT[off + r]! -= u * E[e0 + r]!;
        }
        const k = gidx[j]!;
        for (let r = 0; r < rows; r++) {
          sc[r] = state.scales[r * groups + k]!;
          zp[r] = state.zeros[r * groups + k]!;
        }
        for (let r = 0; r < rows; r++) {
          const w = WT[off + r]!;
          const c = quantizeCode(w, sc[r]!, zp[r]!, g.maxq);
          const q = dequantize(c, sc[r]!, zp[r]!);
          codesT[off + r] = c;
          WT[off + r] = q;
          const e = (w - q) / d;
          E[eoff + r] = e;
          errSq += e * e;
        }
      }
      // The sub-block's feedback to the rest of the block.
      if (s2 < i2) await lazyUpdate(gemm, WT, rows, cols, U, E, i1, s1, s2, i2);
    }
    // The block's feedback to every later column.
    if (i2 < cols) await lazyUpdate(gemm, WT, rows, cols, U, E, i1, i1, i2, cols);
  }

  // Back to [out, in] and original column order.
  let QT = WT;
  let CT = codesT;
  if (perm) {
    QT = new Float64Array(cols * rows);
    CT = new Uint8Array(cols * rows);
    for (let j = 0; j < cols; j++) {
      QT.set(WT.subarray(j * rows, (j + 1) * rows), perm[j]! * rows);
      CT.set(codesT.subarray(j * rows, (j + 1) * rows), perm[j]! * rows);
    }
  }
  const weights = new Float32Array(rows * cols);
  transpose(QT, cols, rows, weights);
  transpose(CT, cols, rows, state.codes);
  let dq = 0;
  for (let i = 0; i < rows * cols; i++) {
    if (dead[i % cols]) continue;
    const v = W[i]! - weights[i]!;
    dq += v * v;
  }
  const error = Math.max(0, (h.tokens / 2) * (errSq - h.lambda * dq));
  return { weights, state, error };
}

/** dst [cols, rows] = srcᵀ for src [rows, cols], row-major, in 32×32 tiles (cache-friendly both ways). */
function transpose(src: ArrayLike<number>, rows: number, cols: number, dst: { [i: number]: number }): void {
  const T = 32;
  for (let r0 = 0; r0 < rows; r0 += T) {
    const r1 = Math.min(rows, r0 + T);
    for (let c0 = 0; c0 < cols; c0 += T) {
      const c1 = Math.min(cols, c0 + T);
      for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) dst[c * rows + r] = src[r * cols + c]!;
    }
  }
}

/** Columns [from1, to1) −= the feedback of columns [from0, from1): Wᵀ[from1:to1] −= U[from0:from1, from1:to1]ᵀ · Eᵀ. */
async function lazyUpdate(
  gemm: Gemm,
  WT: Float64Array,
  rows: number,
  cols: number,
  U: Float64Array,
  E: Float64Array,
  i1: number,
  from0: number,
  from1: number,
  to1: number,
): Promise<void> {
  const kk = from1 - from0;
  const m = to1 - from1;
  const A = block(U, cols, from0, from1, from1, to1); // [kk, m]
  const Eb = E.subarray((from0 - i1) * rows, (from1 - i1) * rows); // [kk, rows]
  const C = WT.subarray(from1 * rows, to1 * rows); // [m, rows]
  WT.set(await gemm.product(A, Eb, m, kk, rows, { transA: true, alpha: -1, C }), from1 * rows);
}

/** The Gram matrices of targets that read the same input (q, k, v) are equal: invert once. */
function sameStats(a: InputStats, b: InputStats): boolean {
  if (a === b) return true;
  if (a.dim !== b.dim || a.tokens !== b.tokens) return false;
  for (let i = 0; i < a.gram.length; i++) if (a.gram[i] !== b.gram[i]) return false;
  return true;
}

/** [out, in] float32 copy of a stored weight. */
export function outIn(p: Param, info: LinearInfo): Float32Array {
  if (info.layout === 'out-in') return p.data.slice();
  const rows = info.outDim;
  const cols = info.inDim;
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < cols; i++) for (let o = 0; o < rows; o++) out[o * cols + i] = p.data[i * rows + o]!;
  return out;
}

/**
 * A change made to W ([out, in]) before GPTQ quantizes it, given the matrix's statistics and its
 * prepared Hessian (Fair-GPTQ's pre-update). Returns the new W and report entries, and optionally
 * another prepared Hessian for GPTQ's error feedback (Fair-GPTQ's joint solver).
 */
export type PreUpdate = (
  W: Float32Array,
  t: LinearInfo,
  s: InputStats,
  h: PreparedHessian,
) => Promise<{ W: Float32Array; detail?: Record<string, number | string | boolean>; /** quantize against this Hessian instead (joint solver) */ h?: PreparedHessian } | undefined>;

/**
 * GPTQ of `targets` against their statistics, in place in ctx.params (the core shared by gptq and
 * fair-gptq). `error` in the report is ‖(W − Ŵ)X‖² with W the matrix as it came in (before any
 * pre-update), over the calibration tokens that reached it.
 */
export async function gptqTargets(
  gemm: Gemm,
  ctx: Pick<CompressContext, 'params' | 'quantized'>,
  targets: readonly LinearInfo[],
  stats: Map<string, InputStats>,
  opts: GptqOptions,
  method: string,
  preUpdate?: PreUpdate,
): Promise<MatrixReport[]> {
  const prepared: { stats: InputStats; h: PreparedHessian }[] = [];
  const reports: MatrixReport[] = [];
  for (const t of targets) {
    const s = stats.get(t.weight);
    if (s === undefined) throw new DikeError(t.weight, method, 'no calibration statistics for this matrix');
    let h = prepared.find((x) => sameStats(x.stats, s))?.h;
    if (h === undefined) {
      h = await prepareHessian(gemm, s, opts.dampening_frac, opts.act_order, t.weight);
      prepared.length = 0; // keep one (the inputs of consecutive targets repeat: q, k, v)
      prepared.push({ stats: s, h });
    }
    const p = ctx.params.get(t.weight)!;
    assertFinite(p.data, t.weight);
    const W = outIn(p, t);
    const pre = preUpdate ? await preUpdate(W, t, s, h) : undefined;
    const res = await gptqMatrix(gemm, pre?.W ?? W, t.outDim, t.inDim, pre?.h ?? h, opts);
    // With a pre-update, GPTQ's own bookkeeping measures against the updated W: measure against W.
    const error = pre ? await reconstructionErrorGemm(gemm, W, res.weights, s.gram, t.outDim, t.inDim, h.dead) : res.error;
    fromOutIn({ rows: t.outDim, cols: t.inDim, data: res.weights }, p, t);
    ctx.quantized.set(t.weight, res.state);
    reports.push({
      weight: t.weight,
      method,
      bits: opts.bits,
      groupSize: res.state.groupSize,
      symmetric: opts.symmetric,
      detail: {
        error,
        calibration: opts.calibration,
        act_order: opts.act_order,
        static_groups: res.state.groupSize < t.inDim && (opts.static_groups || opts.act_order),
        dampening_frac: opts.dampening_frac,
        dead_inputs: h.dead.reduce((a, b) => a + b, 0),
        calibration_tokens: s.tokens,
        ...(pre?.detail ?? {}),
      },
    });
  }
  return reports;
}

/** ‖(W − Ŵ)X‖² = Σ_rows d G dᵀ with D = W − Ŵ (dead inputs of W zeroed, as GPTQ does), on ORT's GEMM. */
export async function reconstructionErrorGemm(gemm: Gemm, W: Float32Array, What: Float32Array, gram: Float64Array, rows: number, cols: number, dead?: Uint8Array): Promise<number> {
  const D = new Float64Array(rows * cols);
  for (let i = 0; i < D.length; i++) D[i] = dead?.[i % cols] ? 0 : W[i]! - What[i]!;
  const DG = await gemm.product(D, gram, rows, cols, cols);
  let total = 0;
  for (let i = 0; i < D.length; i++) total += D[i]! * DG[i]!;
  return total;
}

export function readGptqOptions(r: OptionReader, where: string): GptqOptions {
  return {
    ...readQuantOptions(r, where),
    dampening_frac: r.num('dampening_frac', 0.01, [0, 100]),
    act_order: r.bool('act_order', false),
    static_groups: r.bool('static_groups', false),
    block_size: r.int('block_size', 128, [1, 1 << 20]),
    calibration: r.oneOf('calibration', CALIBRATION_MODES, 'sequential'),
    symmetric_range: r.oneOf('symmetric_range', ['full', 'reference'] as const, 'full'),
  };
}

export const gptq: Method<GptqOptions> = {
  name: 'gptq',
  description: 'GPTQ: column-by-column quantization with second-order error feedback from calibration inputs',
  reference: 'Frantar, Ashkboos, Hoefler & Alistarh 2023, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained Transformers", Algorithm 1',
  needsCalibration: true,
  parseOptions(raw, where) {
    const r = new OptionReader(raw, 'recipe', where);
    const o = readGptqOptions(r, where);
    r.done();
    return o;
  },
  async apply(ctx, opts) {
    const gemm = new Gemm();
    const reports: MatrixReport[] = [];
    try {
      await ctx.walk({ mode: opts.calibration, granularity: 'group' }, async (targets, stats) => {
        reports.push(...(await gptqTargets(gemm, ctx, targets, stats, opts, 'gptq')));
      });
    } finally {
      await gemm.dispose();
    }
    return reports;
  },
};
