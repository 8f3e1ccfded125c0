/** Rank statistics for locate: Spearman's ρ (average ranks for ties) and top-k orderings. */

/** Ranks 1..n with ties given their average rank (as scipy.stats.rankdata 'average'). */
export function averageRanks(xs: readonly number[]): number[] {
  const order = xs.map((_, i) => i).sort((a, b) => xs[a]! - xs[b]!);
  const ranks = new Array<number>(xs.length);
  for (let i = 0; i < order.length; ) {
    let j = i;
    while (j + 1 < order.length && xs[order[j + 1]!] === xs[order[i]!]) j++;
    const r = (i + j) / 2 + 1;
    for (let k = i; k <= j; k++) ranks[order[k]!] = r;
    i = j + 1;
  }
  return ranks;
}

/** Spearman's rank correlation: Pearson's r of the average ranks; NaN with < 2 pairs or no spread. */
export function spearman(a: readonly number[], b: readonly number[]): number {
  if (a.length !== b.length) throw new RangeError(`spearman: ${a.length} ≠ ${b.length} values`);
  const keep = a.map((_, i) => i).filter((i) => Number.isFinite(a[i]!) && Number.isFinite(b[i]!));
  if (keep.length < 2) return NaN;
  const ra = averageRanks(keep.map((i) => a[i]!));
  const rb = averageRanks(keep.map((i) => b[i]!));
  const n = keep.length;
  const ma = ra.reduce((s, x) => s + x, 0) / n;
  const mb = rb.reduce((s, x) => s + x, 0) / n;
  let sab = 0;
  let saa = 0;
  let sbb = 0;
  for (let i = 0; i < n; i++) {
    sab += (ra[i]! - ma) * (rb[i]! - mb);
    saa += (ra[i]! - ma) ** 2;
    sbb += (rb[i]! - mb) ** 2;
  }
  return saa === 0 || sbb === 0 ? NaN : sab / Math.sqrt(saa * sbb);
}

/** Indices sorted by |value| descending (ties: lower index first); non-finite values last. */
export function byMagnitude(xs: readonly number[]): number[] {
  const mag = (x: number): number => (Number.isFinite(x) ? Math.abs(x) : -1);
  return xs.map((_, i) => i).sort((a, b) => mag(xs[b]!) - mag(xs[a]!) || a - b);
}
