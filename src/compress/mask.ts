/**
 * Choosing which weights a pruning method removes, shared by the score-based methods (Wanda,
 * SparseGPT). Deterministic: ties are broken by position, so equal inputs give equal masks.
 */
import { DikeError } from '../errors.js';

/**
 * Set mask[i] = 1 for the min(k, n) entries of smallest score (n = scores.length), ties broken by
 * lower index. O(n) expected (quickselect of the threshold, then one pass).
 */
export function markSmallest(scores: Float64Array, k: number, mask: Uint8Array): void {
  const n = scores.length;
  k = Math.min(k, n);
  if (k <= 0) return;
  const threshold = kthSmallest(scores.slice(), k - 1);
  let below = 0;
  for (let i = 0; i < n; i++) if (scores[i]! < threshold) below++;
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
 * The value of rank r (0-based) in ascending order; reorders `a`. Quickselect with a median-of-three
 * pivot (Hoare 1961, "FIND"), falling back to a full sort if partitioning degenerates.
 */
function kthSmallest(a: Float64Array, r: number): number {
  let lo = 0;
  let hi = a.length - 1;
  let budget = 2 * Math.ceil(Math.log2(a.length + 1)) + 8;
  while (hi > lo) {
    if (budget-- === 0) {
      const rest = a.subarray(lo, hi + 1).sort();
      return rest[r - lo]!;
    }
    const mid = (lo + hi) >>> 1;
    // Median of a[lo], a[mid], a[hi] as the pivot.
    const x = a[lo]!, y = a[mid]!, z = a[hi]!;
    const pivot = x < y ? (y < z ? y : x < z ? z : x) : x < z ? x : y < z ? z : y;
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i]! < pivot) i++;
      while (a[j]! > pivot) j--;
      if (i <= j) {
        const t = a[i]!;
        a[i++] = a[j]!;
        a[j--] = t;
      }
    }
    // Now a[lo..j] ≤ pivot ≤ a[i..hi], and entries strictly between j and i equal the pivot.
    if (r <= j) hi = j;
    else if (r >= i) lo = i;
    else return pivot;
  }
  return a[r]!;
}

/**
 * How many weights the part [start, end) of a matrix removes, the matrix being split into units
 * (rows, columns) of `perUnit` weights: round(s·perUnit·end) − round(s·perUnit·start). Every prefix,
 * and so the whole matrix, removes exactly round(s · its size) — magnitude pruning's per-matrix
 * count — and each part is within one of s · its size.
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
 * `order` is scratch space of M entries.
 */
export function markNM(scores: Float64Array, cols: number, row: number, from: number, to: number, n: number, m: number, mask: Uint8Array, order = new Int32Array(m)): void {
  const o = row * cols;
  for (let g = o + from; g < o + to; g += m) {
    // Insertion sort of the group's positions by (score, −index): M is small (4, 8, 16).
    for (let a = 0; a < m; a++) {
      const p = g + a;
      const s = scores[p]!;
      let b = a;
      while (b > 0 && scores[order[b - 1]!]! >= s) {
        order[b] = order[b - 1]!;
        b--;
      }
      order[b] = p;
    }
    for (let t = 0; t < m - n; t++) mask[order[t]!] = 1;
  }
}

/** The input dimension must be a multiple of M: a partial group has no N:M meaning. */
export function checkNM(cols: number, m: number, weight: string, method: string): void {
  if (cols % m !== 0) throw new DikeError('recipe', `${method} "${weight}"`, `N:M needs the input dimension (${cols}) to be a multiple of M (${m})`);
}
