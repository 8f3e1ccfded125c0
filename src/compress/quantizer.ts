/**
 * The uniform integer grid shared by RTN and GPTQ, so both quantize onto exactly the same values.
 *
 *   w ≈ ŵ = scale · (code − zero),  code ∈ {0, …, 2^bits − 1}
 *
 * One (scale, zero) per output row and group of input columns, from the group's range with 0
 * always inside it (Frantar et al. 2023, GPTQ reference `quant.py`, `Quantizer.find_params`):
 *   xmin = min(0, min w), xmax = max(0, max w)
 *   asymmetric: scale = (xmax − xmin) / maxq,        zero = round(−xmin / scale)
 *   symmetric:  scale = 2·max(|xmin|, xmax) / maxq,   zero = 2^(bits−1)
 *   code = clamp(round(w / scale) + zero, 0, maxq)
 * For a symmetric group with no negative value, the GPTQ reference keeps xmin = 0 and so clips the
 * top half of the range; we use 2·max|w| / maxq as compressed-tensors (llm-compressor) does, which is
 * the reference's value whenever the group has a negative entry. An all-zero group gets the
 * reference's fallback range [−1, 1]. Rounding is half-to-even, as torch.round.
 *
 * Arithmetic follows the reference's float32 semantics where it decides a code: the scale is rounded
 * to float32 (that is what is stored), w / scale is rounded to float32 before rounding to an integer,
 * and ŵ = fround(scale · (code − zero)) is exactly what a float32 kernel computes from the integer
 * form, so the written weights equal their QuantState bit for bit.
 */
import type { QuantState } from './types.js';

export const SUPPORTED_BITS = [2, 3, 4, 8] as const;

export interface Grid {
  bits: number;
  /** 2^bits − 1, the largest code. */
  maxq: number;
  symmetric: boolean;
  /**
   * Symmetric range exactly as the GPTQ reference (and GPTQModel's quantizer.py) computes it: a group
   * with no negative entry keeps xmin = 0, so scale = max w / maxq and the top half of the codes is
   * clipped. Off (default): scale = 2·max|w| / maxq for every group, as compressed-tensors.
   */
  referenceSymmetric?: boolean;
}

export function grid(bits: number, symmetric: boolean, referenceSymmetric = false): Grid {
  return { bits, maxq: 2 ** bits - 1, symmetric, ...(referenceSymmetric && symmetric ? { referenceSymmetric: true } : {}) };
}

/** Round half to even (torch.round / numpy.rint). */
export function rint(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Effective group size: the whole row for per-channel (−1) or a group at least as wide as the row. */
export function effectiveGroupSize(groupSize: number, cols: number): number {
  return groupSize <= 0 || groupSize >= cols ? cols : groupSize;
}

export function groupCount(cols: number, groupSize: number): number {
  return Math.ceil(cols / groupSize);
}

/** Scale (float32) and zero point of a range [xmin, xmax] that contains 0, into scales[at], zeros[at]. */
function paramsOfRange(g: Grid, xmin: number, xmax: number, scales: Float32Array, zeros: Uint8Array, at: number): void {
  if (g.symmetric) {
    const a = Math.max(-xmin, xmax);
    if (!(g.referenceSymmetric && xmin === 0)) xmin = -a;
    xmax = a;
  }
  if (xmin === 0 && xmax === 0) {
    xmin = -1;
    xmax = 1;
  }
  const scale = Math.fround(Math.fround(xmax - xmin) / g.maxq);
  scales[at] = scale;
  zeros[at] = g.symmetric ? (g.maxq + 1) / 2 : Math.min(g.maxq, Math.max(0, rint(Math.fround(-xmin / scale))));
}

/**
 * Scale (float32) and zero point of the values x[off], x[off + stride], … (n of them).
 * Writes into scales[at] and zeros[at].
 */
export function findParams(
  g: Grid,
  x: ArrayLike<number>,
  off: number,
  n: number,
  stride: number,
  scales: Float32Array,
  zeros: Uint8Array,
  at: number,
): void {
  let xmin = 0;
  let xmax = 0;
  for (let i = 0, p = off; i < n; i++, p += stride) {
    const v = x[p]!;
    if (v < xmin) xmin = v;
    if (v > xmax) xmax = v;
  }
  paramsOfRange(g, xmin, xmax, scales, zeros, at);
}

/**
 * findParams for every row r of a transposed matrix xT [cols, rows] over columns [c0, c1), reading
 * memory in order: the grid of (row r, group k) goes to scales[r·groups + k], zeros[r·groups + k].
 */
export function findParamsT(
  g: Grid,
  xT: ArrayLike<number>,
  rows: number,
  c0: number,
  c1: number,
  scales: Float32Array,
  zeros: Uint8Array,
  groups: number,
  k: number,
): void {
  const lo = new Float64Array(rows);
  const hi = new Float64Array(rows);
  for (let c = c0; c < c1; c++) {
    const off = c * rows;
    for (let r = 0; r < rows; r++) {
      const v = xT[off + r]!;
      if (v < lo[r]!) lo[r] = v;
      if (v > hi[r]!) hi[r] = v;
    }
  }
  for (let r = 0; r < rows; r++) paramsOfRange(g, lo[r]!, hi[r]!, scales, zeros, r * groups + k);
}

/** The code of x on the grid (scale, zero). */
export function quantizeCode(x: number, scale: number, zero: number, maxq: number): number {
  const q = rint(Math.fround(x / scale)) + zero;
  return q < 0 ? 0 : q > maxq ? maxq : q;
}

/** ŵ = scale · (code − zero), as float32. */
export function dequantize(code: number, scale: number, zero: number): number {
  return Math.fround(scale * (code - zero));
}

/** An empty integer form for a [rows, cols] matrix. */
export function emptyState(g: Grid, rows: number, cols: number, groupSize: number): QuantState {
  const gs = effectiveGroupSize(groupSize, cols);
  const groups = groupCount(cols, gs);
  return {
    bits: g.bits,
    groupSize: gs,
    symmetric: g.symmetric,
    rows,
    cols,
    codes: new Uint8Array(rows * cols),
    scales: new Float32Array(rows * groups),
    zeros: new Uint8Array(rows * groups),
  };
}

/**
 * Round-to-nearest of an [out, in] row-major matrix: every (row, group) gets its own grid from its
 * own values; `data` is overwritten with ŵ. Returns the integer form.
 */
export function quantizeRtn(g: Grid, data: Float32Array, rows: number, cols: number, groupSize: number): QuantState {
  const s = emptyState(g, rows, cols, groupSize);
  const gs = s.groupSize;
  const groups = groupCount(cols, gs);
  for (let r = 0; r < rows; r++) {
    for (let k = 0; k < groups; k++) {
      const from = r * cols + k * gs;
      const n = Math.min(gs, cols - k * gs);
      const at = r * groups + k;
      findParams(g, data, from, n, 1, s.scales, s.zeros, at);
      const scale = s.scales[at]!;
      const zero = s.zeros[at]!;
      for (let i = from; i < from + n; i++) {
        const c = quantizeCode(data[i]!, scale, zero, g.maxq);
        s.codes[i] = c;
        data[i] = dequantize(c, scale, zero);
      }
    }
  }
  return s;
}

/** ŵ of every entry of an integer form, [rows, cols] row-major float32. */
export function dequantizeState(s: QuantState): Float32Array {
  const out = new Float32Array(s.rows * s.cols);
  const groups = groupCount(s.cols, s.groupSize);
  for (let r = 0; r < s.rows; r++) {
    for (let c = 0; c < s.cols; c++) {
      const at = r * groups + Math.floor(c / s.groupSize);
      out[r * s.cols + c] = dequantize(s.codes[r * s.cols + c]!, s.scales[at]!, s.zeros[at]!);
    }
  }
  return out;
}
