/**
 * Percentile bootstrap over items (Efron & Tibshirani 1993, ch. 13): resample the items with
 * replacement B times, recompute the statistic, and take the 2.5th and 97.5th percentiles.
 */
import { Rng } from '../../util/rng.js';
import type { ScoreCI } from '../types.js';

export const DEFAULT_RESAMPLES = 1000;
export const DEFAULT_SEED = 20260101;

/** Quantile with linear interpolation between order statistics (numpy's default, "linear"). */
export function quantile(sorted: ArrayLike<number>, q: number): number {
  const n = sorted.length;
  if (n === 0) return NaN;
  const h = (n - 1) * q;
  const lo = Math.floor(h);
  const hi = Math.min(lo + 1, n - 1);
  return sorted[lo]! + (h - lo) * (sorted[hi]! - sorted[lo]!);
}

/**
 * Bootstrap a statistic of n items. `stat` receives the resampled item indices (length n) and
 * returns the statistic; NaN results (e.g. an empty denominator in a resample) are dropped.
 */
export function bootstrapCI(n: number, stat: (idx: Int32Array) => number, opts: { seed: number; resamples: number }): ScoreCI {
  const all = Int32Array.from({ length: n }, (_, i) => i);
  const score = stat(all);
  if (n === 0) return { score, ci95: [NaN, NaN], n };
  const rng = new Rng(opts.seed);
  const values: number[] = [];
  const idx = new Int32Array(n);
  for (let b = 0; b < opts.resamples; b++) {
    for (let i = 0; i < n; i++) idx[i] = rng.int(n);
    const v = stat(idx);
    if (!Number.isNaN(v)) values.push(v);
  }
  values.sort((a, b) => a - b);
  return { score, ci95: [quantile(values, 0.025), quantile(values, 0.975)], n };
}

/** Bootstrap CI of the mean of per-item values (times `scale`). */
export function meanCI(values: ArrayLike<number>, opts: { seed: number; resamples: number; scale?: number }): ScoreCI {
  const scale = opts.scale ?? 1;
  return bootstrapCI(
    values.length,
    (idx) => {
      let s = 0;
      for (let i = 0; i < idx.length; i++) s += values[idx[i]!]!;
      return (scale * s) / idx.length;
    },
    opts,
  );
}

/** Group item indices by a key, in first-seen order. */
export function groupIndices<T>(items: readonly T[], key: (t: T) => string): Map<string, number[]> {
  const m = new Map<string, number[]>();
  items.forEach((t, i) => {
    const k = key(t);
    const list = m.get(k);
    if (list) list.push(i);
    else m.set(k, [i]);
  });
  return m;
}

/** Seed for a sub-analysis (a group), derived deterministically from the base seed and a name. */
export function subSeed(seed: number, name: string): number {
  let h = seed >>> 0;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}
