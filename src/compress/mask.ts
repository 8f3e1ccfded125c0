/**
 * Choosing which weights a pruning method removes, shared by the score-based methods (Wanda,
 * SparseGPT). Deterministic: ties are broken by position, so equal inputs give equal masks.
 */
import { DikeError } from '../errors.js';

/**
 * Set mask[i] = 1 for exactly min(k, n) entries of smallest score (n = scores.length), ties broken
 * by lower index. Entries already set stay set and are not counted. O(n log n) in a native sort.
 */
export function markSmallest(scores: Float64Array, k: number, mask: Uint8Array): void {
  const n = scores.length;
  k = Math.min(k, n);
  if (k <= 0) return;
  const sorted = scores.slice().sort();
  const threshold = sorted[k - 1]!;
  let below = 0;
  for (let i = 0; i < n && sorted[i]! < threshold; i++) below++;
  let ties = k - below;
  for (let i = 0; i < n; i++) {
    const s = scores[i]!;
    if (s < threshold) mask[i] = 1;
    else if (s === threshold && ties > 0) {
      mask[i] = 1;
      ties--;
    }
  }
}

/**
 * How many of `total` units (rows, column blocks) the part [start, end) removes so that every
 * prefix, and the whole, removes exactly round(sparsity · units): part counts differ by at most
 * one from sparsity · (end − start), and the matrix total equals magnitude pruning's per-matrix count.
 */
export function countFor(sparsity: number, perUnit: number, start: number, end: number): number {
  return Math.round(sparsity * (perUnit * end)) - Math.round(sparsity * (perUnit * start));
}

/** "N:M" → { n, m } (validated by OptionReader.pattern). */
export function parsePattern(pattern: string): { n: number; m: number } {
  const [n, m] = pattern.split(':').map(Number);
  return { n: n!, m: m! };
}

/**
 * N:M semi-structured sparsity (at most N non-zeros in every M consecutive inputs of an output row,
 * groups aligned at input 0, as sparse tensor cores and methods/nm.ts use it): in row `row` of a
 * [rows, cols] score matrix, mark the M − N entries of smallest score in each group of columns
 * [from, to) (from and to − from multiples of M). Ties keep the lower index, as nm.ts does.
 */
export function markNM(scores: Float64Array, cols: number, row: number, from: number, to: number, n: number, m: number, mask: Uint8Array): void {
  const o = row * cols;
  const order: number[] = [];
  for (let g = from; g < to; g += m) {
    order.length = 0;
    for (let j = g; j < g + m; j++) order.push(j);
    order.sort((a, b) => scores[o + a]! - scores[o + b]! || b - a);
    for (let t = 0; t < m - n; t++) mask[o + order[t]!] = 1;
  }
}

/** The input dimension must be a multiple of M: a partial group has no N:M meaning. */
export function checkNM(cols: number, m: number, weight: string, method: string): void {
  if (cols % m !== 0) throw new DikeError('recipe', `${method} "${weight}"`, `N:M needs the input dimension (${cols}) to be a multiple of M (${m})`);
}
