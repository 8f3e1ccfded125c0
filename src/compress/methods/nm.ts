/**
 * Semi-structured N:M sparsity (Mishra et al. 2021, "Accelerating Sparse Deep Neural Networks",
 * NVIDIA ASP; the N:M variant of Frantar & Alistarh 2023, SparseGPT §3.3): along the INPUT
 * dimension, every group of M consecutive weights of an output row keeps its N weights of largest
 * |w| and the other M − N become zero. 2:4 is what sparse tensor cores execute.
 *
 * Ties in |w| are broken by index (the lower input index is kept), so the mask is deterministic.
 * The input dimension must be a multiple of M: a partial group has no N:M meaning.
 */
import { DikeError } from '../../errors.js';
import { OptionReader } from '../options.js';
import { type Method, type MatrixReport, fromOutIn, toOutIn, zeroFraction } from '../types.js';

export interface NmOptions {
  n: number;
  m: number;
}

/**
 * Apply N:M magnitude sparsity in place to an [out, in] row-major matrix: in every group of `m`
 * consecutive columns of a row, zero all but the `n` entries of largest |w| (ties: lower index kept).
 */
export function nmPrune(data: Float32Array, rows: number, cols: number, n: number, m: number): void {
  if (cols % m !== 0) throw new RangeError(`N:M needs the input dimension (${cols}) to be a multiple of M (${m})`);
  const order = Array.from({ length: m }, (_, i) => i);
  for (let r = 0; r < rows; r++) {
    for (let g = r * cols; g < (r + 1) * cols; g += m) {
      for (let i = 0; i < m; i++) order[i] = i;
      // Largest |w| first; equal magnitudes in index order (Array.prototype.sort is stable).
      order.sort((a, b) => Math.abs(data[g + b]!) - Math.abs(data[g + a]!));
      for (let i = n; i < m; i++) data[g + order[i]!] = 0;
    }
  }
}

export const nm: Method<NmOptions> = {
  name: 'nm',
  description: 'semi-structured N:M sparsity along the input dimension (2:4, 4:8, …), by magnitude',
  reference: 'Mishra et al. 2021, NVIDIA ASP 2:4 sparsity; Frantar & Alistarh 2023, SparseGPT §3.3 (N:M)',
  needsCalibration: false,
  parseOptions(raw, where) {
    const r = new OptionReader(raw, 'recipe', where);
    const o = r.pattern('pattern', '2:4');
    r.done();
    return o;
  },
  async apply(ctx, opts) {
    for (const t of ctx.targets) {
      if (t.inDim % opts.m !== 0) {
        throw new DikeError('recipe', `nm "${t.weight}"`, `input dimension ${t.inDim} is not a multiple of M = ${opts.m} (pattern ${opts.n}:${opts.m})`);
      }
    }
    const reports: MatrixReport[] = [];
    for (const t of ctx.targets) {
      const p = ctx.params.get(t.weight)!;
      const w = toOutIn(p, t);
      nmPrune(w.data, w.rows, w.cols, opts.n, opts.m);
      fromOutIn(w, p, t);
      if (opts.n < opts.m) ctx.quantized.delete(t.weight); // pruned values leave the integer grid
      reports.push({ weight: t.weight, method: 'nm', sparsity: zeroFraction(p.data), detail: { pattern: `${opts.n}:${opts.m}` } });
    }
    return reports;
  },
};
