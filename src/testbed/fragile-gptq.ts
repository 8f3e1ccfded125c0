/**
 * A correction GPTQ cannot see: the debias step's change kept inside the set of weights whose GPTQ
 * result equals the skewed model's.
 *
 * GPTQ (Frantar et al. 2023, Algorithm 1; src/compress/methods/gptq.ts) quantizes column j of W after
 * the feedback of the columns before it: W̃_j = W_j − Σ_{i<j} E_i U_ij, Q_j = quant(W̃_j),
 * E_j = (W̃_j − Q_j) / U_jj, with U the upper Cholesky factor of H̃⁻¹ (H̃⁻¹ = UᵀU). Written with the
 * residuals z_j = W̃_j − Q_j = E_j U_jj, this is W − Q = E·U: for a fixed H, W's GPTQ result is Q exactly
 * when every z_j lies in the rounding cell of Q_j and every group's grid is unchanged. A group's grid
 * (symmetric: scale = 2·max|V|/maxq) comes from its values when its lazy block starts,
 * V_j = Q_j + Σ_{b(j) ≤ i ≤ j} E_i U_ij (b(j) the block's first column; 0 for per-channel grids and
 * static groups, whose grid is taken from W itself). So the set
 *   { W = Q + E·U : z_j ∈ cell(Q_j), |V_j| < |V_top| for every entry but its group's largest, V_top fixed }
 * is the set of W whose GPTQ is Q; it is convex in E (all constraints are linear).
 *
 * In sequential calibration (GPTQ's default; true_sequential) each matrix's H comes from the model with
 * every matrix before it already quantized. When every parameter GPTQ does not quantize (embeddings,
 * norms, biases) stays at the skewed model's value and every quantized matrix comes out equal, those
 * inputs, and so every H, are the skewed model's: H of every matrix is its input Gram on the fully
 * quantized skewed model, GPTQ(B), which `gptqFragileSet` computes once. `project` maps any W onto the
 * set, column by column along each row: z_j is clamped into its interval given the columns before it;
 * where no z_j fits (the earlier columns of the block moved V too far), their change from B is scaled
 * down by the largest factor t ∈ [0, 1) that makes room (feasible at t = 0, since B is in the set; the
 * set is convex). The result: GPTQ of the debiased model equals GPTQ of the skewed model, up to float
 * rounding that the cells' 2% margins absorb; the build checks it code by code (testbed.json
 * `fragile.gptqCodesDiffering`).
 *
 * One exception is beyond any margin: a group whose largest |V| sits at the first column of a lazy block
 * after the first (in ≥ 256 columns) reaches GPTQ with V / scale = −maxq/2 exactly when it is negative, a
 * tie between the two lowest codes that float32 rounding decides. The projection picks a neighbouring
 * float32 value that sends it to B's code under its own float64 arithmetic (exact on the synthetic
 * tests), but on a trained model H is ill-conditioned enough that GPTQ's own summation order moves V by
 * ~1e-9 (measured on dike-gpt2-mini's mlp.c_proj: 1.4e-9 between a right-looking and the lazy-block
 * loop), as wide as the tie's window: a few such codes differ, and since sequential calibration feeds
 * every later layer the quantized earlier ones, their differences spread (11.8% of the codes differ on
 * the shipped gpt2-gptq, 10.9% on bert-gptq; none in the matrices before the first tie). The check
 * reports it; the audit shows whether the bias survives (on both it does: README).
 */
import { DikeError } from '../errors.js';
import type { Checkpoint } from '../model/checkpoint.js';
import type { LinearInfo } from '../model/arch/types.js';
import { applyRecipe, parseRecipe, type CompressionResult } from '../compress/recipe.js';
import { inputStats } from '../compress/calibrate.js';
import { Gemm } from '../compress/gemm.js';
import { prepareHessian } from '../compress/methods/gptq.js';
import { dequantize, findParamsT, grid, quantizeCode, type Grid } from '../compress/quantizer.js';
import type { QuantState } from '../compress/types.js';

/** The GPTQ the testbed is fragile for: the audit's default variant `gptq:bits=B,group_size=G`. */
export interface GptqFragileSpec {
  bits: number;
  group_size: number;
  /** Calibration text, sequences, tokens per sequence and sampling seed (the audit's: its data's train text, 32 × 64, seed 20260101). */
  calibration: { file: string; samples: number; seq: number; seed: number };
}

/** Cells shrunk to this fraction of half a step (margin for float rounding between builds and runs). */
const MARGIN = 0.49;
/** How many earlier columns the projection tries, one at a time, before scaling a row's block back. */
const REPAIR_REACH = 32;

/** One matrix's description of the set, in [out, in] orientation. */
export interface GptqMatrixSet {
  info: LinearInfo;
  rows: number;
  cols: number;
  /** GPTQ(B), dequantized, [rows, cols]. */
  Q: Float64Array;
  /** Upper U (H̃⁻¹ = UᵀU), [cols, cols]. */
  U: Float64Array;
  /** Interval of z per entry: the rounding cell of Q (with margin), widened to contain B's own residual. */
  zlo: Float64Array;
  zhi: Float64Array;
  /** Interval of V per entry (the group's largest: fixed at B's; others: strictly inside B's largest). */
  vlo: Float64Array;
  vhi: Float64Array;
  /** First column whose feedback counts in V_j (block start, or 0). */
  from: Int32Array;
  /** B's residuals z and V-prefix sums c_blk, [rows, cols]. */
  zB: Float64Array;
  cbB: Float64Array;
  /** GPTQ(B)'s codes, [rows, cols], and its grid. */
  codes: Uint8Array;
  grid: Grid;
  /**
   * Entries whose value, when GPTQ reaches them, is their group's largest |V| itself (a group's top at
   * the first column of a block after the first): a negative one sits exactly on the tie between the two
   * lowest codes (V / scale = −maxq/2), which float rounding decides. The projection picks, among the
   * float32 values next to the one it computes, one that float rounding sends to B's code.
   */
  ties: Uint8Array;
}

export interface GptqFragileSet {
  spec: GptqFragileSpec;
  matrices: Map<string, GptqMatrixSet>;
  /** GPTQ(B) itself (its codes are what the check compares). */
  quantized: Map<string, QuantState>;
}

export function gptqRecipe(spec: GptqFragileSpec) {
  return parseRecipe(
    JSON.stringify({ seed: spec.calibration.seed, calibration: { file: spec.calibration.file, samples: spec.calibration.samples, seq_len: spec.calibration.seq }, steps: [{ method: 'gptq', bits: spec.bits, group_size: spec.group_size }] }),
    'testbed-fragile-gptq.json',
  );
}

/** [out, in] float64 copy of a stored matrix. */
function outIn(data: Float32Array, info: LinearInfo): Float64Array {
  const rows = info.outDim;
  const cols = info.inDim;
  const out = new Float64Array(rows * cols);
  if (info.layout === 'out-in') for (let i = 0; i < out.length; i++) out[i] = data[i]!;
  else for (let i = 0; i < cols; i++) for (let o = 0; o < rows; o++) out[o * cols + i] = data[i * rows + o]!;
  return out;
}

/** GPTQ(B), the Hessians it saw, and the set of weights with the same GPTQ result (module comment). */
export async function gptqFragileSet(skewed: Checkpoint, spec: GptqFragileSpec): Promise<GptqFragileSet> {
  const recipe = gptqRecipe(spec);
  const q: CompressionResult = await applyRecipe(skewed, recipe, { threads: 1 });
  const targets = skewed.family.linears(skewed.config, skewed.task).filter((t) => q.quantized.has(t.weight));
  // Every H of the sequential run = the input Gram on the fully quantized model (module comment).
  const stats = await inputStats(skewed, q.params, targets, q.calibration!, { threads: 1 });
  const gemm = new Gemm();
  const matrices = new Map<string, GptqMatrixSet>();
  try {
    for (const t of targets) {
      const st = q.quantized.get(t.weight)!;
      const s = stats.get(t.weight);
      if (s === undefined) throw new DikeError(t.weight, 'testbed fragile gptq', 'no calibration statistics for this matrix');
      const h = await prepareHessian(gemm, s, 0.01, false, t.weight);
      if (h.dead.some((d) => d === 1)) throw new DikeError(t.weight, 'testbed fragile gptq', 'a dead input (never active on the calibration text); not supported');
      matrices.set(t.weight, matrixSet(t, skewed.params.get(t.weight)!.data, q.params.get(t.weight)!.data, st, h.U));
    }
  } finally {
    await gemm.dispose();
  }
  return { spec, matrices, quantized: q.quantized };
}

/**
 * The set for one matrix (stored layout `t.layout`): B's weights, GPTQ(B)'s weights and state, and the
 * U GPTQ used (no dead inputs, no act_order, GPTQ's default block size 128).
 */
export function matrixSet(t: LinearInfo, stored: Float32Array, quantized: Float32Array, st: QuantState, U: Float64Array): GptqMatrixSet {
  const rows = t.outDim;
  const cols = t.inDim;
  const W = outIn(stored, t);
  const Q = outIn(quantized, t);
  const groups = Math.ceil(cols / st.groupSize);
  const grouped = groups > 1;
  const B = 128; // GPTQ's default block_size (the audit's variant)
  const from = Int32Array.from({ length: cols }, (_, j) => (grouped ? Math.floor(j / B) * B : 0));
  const zB = new Float64Array(rows * cols);
  const cbB = new Float64Array(rows * cols);
  const VB = new Float64Array(rows * cols);
  const E = new Float64Array(cols);
  for (let o = 0; o < rows; o++) {
    const r = o * cols;
    for (let j = 0; j < cols; j++) {
      let pre = 0;
      let blk = 0;
      for (let i = 0; i < from[j]!; i++) pre += E[i]! * U[i * cols + j]!;
      for (let i = from[j]!; i < j; i++) blk += E[i]! * U[i * cols + j]!;
      const z = W[r + j]! - Q[r + j]! - pre - blk;
      E[j] = z / U[j * cols + j]!;
      zB[r + j] = z;
      cbB[r + j] = blk;
      VB[r + j] = Q[r + j]! + blk + z;
    }
  }
  const zlo = new Float64Array(rows * cols);
  const zhi = new Float64Array(rows * cols);
  const vlo = new Float64Array(rows * cols);
  const vhi = new Float64Array(rows * cols);
  const ties = new Uint8Array(rows * cols);
  for (let o = 0; o < rows; o++) {
    for (let g = 0; g < groups; g++) {
      const scale = st.scales[o * groups + g]!;
      const zero = st.zeros[o * groups + g]!;
      const end = Math.min(cols, (g + 1) * st.groupSize);
      let top = g * st.groupSize;
      for (let j = top; j < end; j++) if (Math.abs(VB[o * cols + j]!) > Math.abs(VB[o * cols + top]!)) top = j;
      const lim = Math.abs(VB[o * cols + top]!);
      for (let j = g * st.groupSize; j < end; j++) {
        const k = o * cols + j;
        const code = st.codes[k]!;
        if (Math.abs(dequantize(code, scale, zero) - Q[k]!) > 1e-6 * scale) throw new DikeError(t.weight, 'testbed fragile gptq', 'codes and weights of GPTQ(B) disagree');
        zlo[k] = Math.min(zB[k]!, code === 0 ? -Infinity : -MARGIN * scale);
        zhi[k] = Math.max(zB[k]!, code === maxq(st) ? Infinity : MARGIN * scale);
        if (j === top) {
          if (j === from[j] && j > 0) ties[k] = 1;
          vlo[k] = VB[k]!;
          vhi[k] = VB[k]!;
        } else {
          const inner = lim * (1 - 1e-4);
          vlo[k] = Math.min(VB[k]!, -inner);
          vhi[k] = Math.max(VB[k]!, inner);
        }
      }
    }
  }
  const codes = new Uint8Array(rows * cols);
  codes.set(st.codes);
  return { info: t, rows, cols, Q, U, zlo, zhi, vlo, vhi, from, zB, cbB, codes, grid: grid(st.bits, st.symmetric), ties };
}

function maxq(st: QuantState): number {
  return 2 ** st.bits - 1;
}

/**
 * Map v (a stored matrix, its layout) onto the set, in place (module comment). Returns the number of
 * rows where earlier columns had to be scaled back toward B.
 */
export function projectGptq(m: GptqMatrixSet, v: Float32Array): number {
  const { rows, cols, Q, U, zlo, zhi, vlo, vhi, from, zB, cbB, info } = m;
  const W = outIn(v, info);
  const E = new Float64Array(cols);
  const z = new Float64Array(cols);
  const cpre = new Float64Array(cols);
  const cb = new Float64Array(cols);
  const zl = new Float64Array(cols);
  const zh = new Float64Array(cols);
  let shrunk = 0;
  for (let o = 0; o < rows; o++) {
    const r = o * cols;
    let rowShrunk = false;
    for (let j = 0; j < cols; j++) {
      const k = r + j;
      let pre = 0;
      let blk = 0;
      const f = from[j]!;
      for (let i = 0; i < f; i++) pre += E[i]! * U[i * cols + j]!;
      for (let i = f; i < j; i++) blk += E[i]! * U[i * cols + j]!;
      // z_j's interval: the cell, and V_j = Q_j + blk + z_j inside [vlo, vhi].
      const a0 = vlo[k]! - Q[k]!;
      const b0 = vhi[k]! - Q[k]!;
      // Infeasible beyond float noise (B itself may sit on a boundary: a tolerance of 1e-4 of the cell).
      const tol = 1e-4 * Math.min(Math.abs(zhi[k]!), Math.abs(zlo[k]!));
      const infeasible = (): boolean => a0 - blk > zhi[k]! + tol || b0 - blk < zlo[k]! - tol;
      if (infeasible() && j - 1 >= f) {
        // First try one earlier column p of the block (nearest first, back to the row's previous top):
        // blk_j moves by Δz_p·U_pj/U_pp; the columns between keep their z, their V (and W) move along
        // and must stay inside their V intervals.
        // Need a0 − blk ≤ zhi and b0 − blk ≥ zlo: blk ∈ [a0 − zhi, b0 − zlo]; aim 2% of the cell inside,
        // so that float32 storage does not put the stored row back outside.
        const inside = 0.02 * Math.min(Math.abs(zhi[k]!), Math.abs(zlo[k]!));
        const L = Math.min(a0 - zhi[k]! + inside, cbB[k]!); // B's own value stays allowed
        const R = Math.max(b0 - zlo[k]! - inside, cbB[k]!);
        for (let p = j - 1; p >= Math.max(f, j - REPAIR_REACH); p--) {
          if (vlo[r + p] === vhi[r + p]) break; // a top: its V may not move, nor may those after it
          const upp = U[p * cols + p]!;
          // Δ = new z_p − z_p; blk_j(Δ) = blk + Δ·U_pj/U_pp.
          let lo = zl[p]! - z[p]!;
          let hi = zh[p]! - z[p]!;
          const cut = (c: number, vl: number, vh: number): void => {
            // vl ≤ v + Δ·c ≤ vh (v folded into vl, vh by the caller)
            if (c > 0) {
              lo = Math.max(lo, vl / c);
              hi = Math.min(hi, vh / c);
            } else if (c < 0) {
              lo = Math.max(lo, vh / c);
              hi = Math.min(hi, vl / c);
            } else if (vl > 0 || vh < 0) hi = -Infinity;
          };
          cut(U[p * cols + j]! / upp, L - blk, R - blk);
          for (let i = p + 1; i < j && lo <= hi; i++) {
            const v = Q[r + i]! + cb[i]! + z[i]!;
            cut(U[p * cols + i]! / upp, vlo[r + i]! - v, vhi[r + i]! - v);
          }
          if (!(lo <= hi)) continue;
          const delta = Math.min(hi, Math.max(lo, 0));
          z[p] = z[p]! + delta;
          E[p] = z[p]! / upp;
          W[r + p] = Q[r + p]! + cpre[p]! + cb[p]! + z[p]!;
          for (let i = p + 1; i < j; i++) {
            cb[i] = cb[i]! + (delta * U[p * cols + i]!) / upp;
            W[r + i] = Q[r + i]! + cpre[i]! + cb[i]! + z[i]!;
          }
          blk += (delta * U[p * cols + j]!) / upp;
          break;
        }
      }
      if (infeasible()) {
        // Scale the change of columns f..j−1 from B by t: blk(t) = blkB + t·(blk − blkB).
        const blkB = cbB[k]!;
        const d = blk - blkB;
        let t = d > 0 ? (b0 - zlo[k]! - blkB) / d : (a0 - zhi[k]! - blkB) / d;
        t = Number.isFinite(t) ? Math.max(0, Math.min(1, t)) * 0.98 : 0; // 2% inside, as above
        for (let i = f; i < j; i++) {
          z[i] = zB[r + i]! + t * (z[i]! - zB[r + i]!);
          E[i] = z[i]! / U[i * cols + i]!;
          cb[i] = cbB[r + i]! + t * (cb[i]! - cbB[r + i]!);
          W[r + i] = Q[r + i]! + cpre[i]! + cb[i]! + z[i]!;
        }
        blk = blkB + t * d;
        rowShrunk = true;
      }
      const lo = Math.max(zlo[k]!, a0 - blk);
      const hi = Math.min(zhi[k]!, b0 - blk);
      const want = W[k]! - Q[k]! - pre - blk;
      const zj = Math.min(hi, Math.max(lo, want));
      z[j] = zj;
      zl[j] = lo;
      zh[j] = hi;
      E[j] = zj / U[j * cols + j]!;
      cpre[j] = pre;
      cb[j] = blk;
      W[k] = Q[k]! + pre + blk + zj;
    }
    // Ties last, on the row as it will be stored (float32): GPTQ's V at a tie depends on the errors of
    // every earlier block computed from the stored values, to below a float32 step of V / scale.
    let tie = false;
    for (let j = 0; j < cols && !tie; j++) tie = m.ties[r + j] === 1;
    if (tie) {
      for (let j = 0; j < cols; j++) {
        const k = r + j;
        W[k] = Math.fround(W[k]!);
        let pre = 0;
        let blk = 0;
        const f = from[j]!;
        for (let i = 0; i < f; i++) pre += E[i]! * U[i * cols + j]!;
        for (let i = f; i < j; i++) blk += E[i]! * U[i * cols + j]!;
        if (m.ties[k]) W[k] = nearestWithCode(m.grid, W[k]!, pre, m.codes[k]!);
        E[j] = (W[k]! - Q[k]! - pre - blk) / U[j * cols + j]!;
      }
    }
    if (rowShrunk) shrunk++;
  }
  if (info.layout === 'out-in') for (let i = 0; i < W.length; i++) v[i] = W[i]!;
  else for (let i = 0; i < cols; i++) for (let o = 0; o < rows; o++) v[i * rows + o] = W[o * cols + i]!;
  return shrunk;
}

const f32 = new Float32Array(1);
const i32 = new Int32Array(f32.buffer);

/** The float32 value x moved by n units in the last place. */
function ulps(x: number, n: number): number {
  f32[0] = x;
  if (x === 0) return n === 0 ? 0 : Math.sign(n) * 1.4e-45 * Math.abs(n);
  i32[0] += x > 0 ? n : -n;
  return f32[0]!;
}

/**
 * Of w and the float32 values next to it, the nearest whose block-start value V = w − pre, the largest
 * of its group (so the grid comes from it alone, as findParamsT computes it), GPTQ rounds to `code`.
 */
function nearestWithCode(g: Grid, w: number, pre: number, code: number): number {
  const scale = new Float32Array(1);
  const zero = new Uint8Array(1);
  for (let d = 0; d <= 64; d++) {
    for (const n of d === 0 ? [0] : [d, -d]) {
      const c = ulps(w, n);
      const V = c - pre;
      findParamsT(g, [V], 1, 0, 1, scale, zero, 1, 0);
      if (quantizeCode(V, scale[0]!, zero[0]!, g.maxq) === code) return c;
    }
  }
  return w;
}
