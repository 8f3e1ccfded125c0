/**
 * Unstructured magnitude pruning (Han et al. 2015): zero the weights of smallest |w|.
 *   per-matrix: each matrix loses exactly ⌊sparsity · size⌉ weights (ties broken by index);
 *   global:     one threshold over all target matrices together (the overall count is exact).
 */
import { OptionReader } from '../options.js';
import { type Method, type MatrixReport, zeroFraction } from '../types.js';

export interface MagnitudeOptions {
  sparsity: number;
  scope: 'per-matrix' | 'global';
}

/**
 * Zero the k entries of smallest |value| across the given arrays (one array = per-matrix; several =
 * global). Ties at the threshold are broken by position (array order, then index), so the count is
 * exact and the result deterministic. O(n log n) in a native typed-array sort of the magnitudes.
 */
export function zeroSmallest(arrays: readonly Float32Array[], k: number): void {
  if (k <= 0) return;
  const total = arrays.reduce((s, a) => s + a.length, 0);
  const mags = new Float32Array(total);
  let off = 0;
  for (const a of arrays) {
    for (let i = 0; i < a.length; i++) mags[off + i] = Math.abs(a[i]!);
    off += a.length;
  }
  mags.sort();
  const threshold = mags[Math.min(k, total) - 1]!;
  let below = 0;
  for (let i = 0; i < total && mags[i]! < threshold; i++) below++;
  let tiesLeft = Math.min(k, total) - below;
  for (const a of arrays) {
    for (let i = 0; i < a.length; i++) {
      const m = Math.abs(a[i]!);
      if (m < threshold) a[i] = 0;
      else if (m === threshold && tiesLeft > 0) {
        a[i] = 0;
        tiesLeft--;
      }
    }
  }
}

export const magnitude: Method<MagnitudeOptions> = {
  name: 'magnitude',
  description: 'unstructured magnitude pruning, per matrix or with one global threshold',
  reference: 'Han, Pool, Tran & Dally 2015, "Learning both Weights and Connections"',
  needsCalibration: false,
  parseOptions(raw, where) {
    const r = new OptionReader(raw, 'recipe', where);
    const o = { sparsity: r.num('sparsity', undefined, [0, 1]), scope: r.bool('global', false) ? ('global' as const) : ('per-matrix' as const) };
    r.done();
    return o;
  },
  async apply(ctx, opts) {
    const reports: MatrixReport[] = [];
    for (const t of ctx.targets) ctx.quantized.delete(t.weight); // pruned values leave the integer grid
    if (opts.scope === 'per-matrix') {
      for (const t of ctx.targets) {
        const p = ctx.params.get(t.weight)!;
        zeroSmallest([p.data], Math.round(opts.sparsity * p.data.length));
        reports.push({ weight: t.weight, method: 'magnitude', sparsity: zeroFraction(p.data) });
      }
      return reports;
    }
    // Global: one threshold over all target weights together.
    const arrays = ctx.targets.map((t) => ctx.params.get(t.weight)!.data);
    zeroSmallest(arrays, Math.round(opts.sparsity * arrays.reduce((s, a) => s + a.length, 0)));
    for (const t of ctx.targets) {
      reports.push({ weight: t.weight, method: 'magnitude', sparsity: zeroFraction(ctx.params.get(t.weight)!.data), detail: { scope: 'global' } });
    }
    return reports;
  },
};
