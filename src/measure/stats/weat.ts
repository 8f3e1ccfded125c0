/**
 * WEAT / SEAT statistics (Caliskan, Bryson & Narayanan, Science 2017; May, Wang, Bordia, Bowman &
 * Rudinger, NAACL 2019), with the semantics of sent-bias `weat.py` (identical in bias-bench):
 *
 *   s(w, A, B)  = mean_{a∈A} cos(w, a) − mean_{b∈B} cos(w, b)
 *   d           = (mean_{x∈X} s(x,A,B) − mean_{y∈Y} s(y,A,B)) / std_{w∈X∪Y} s(w,A,B)   (std with ddof = 1)
 *   statistic   = Σ_{x∈X} s(x,A,B) − Σ_{y∈Y} s(y,A,B); over equal-size re-partitions (X', Y') of X∪Y
 *                 the total is constant, so ranking partitions by Σ_{x∈X'} s(x,A,B) is the same test.
 *   p (one-sided) = P[statistic(X', Y') ≥ statistic(X, Y)]:
 *     - exact when C(2n, n) ≤ samples (100,000 as sent-bias and bias-bench): every n-subset X' of X∪Y
 *       is enumerated, the observed one included, and ties count ("conservative test"), so
 *       p = #{X' : Σ_{X'} s ≥ Σ_X s} / C(2n, n);
 *     - otherwise Monte Carlo with the reference's bias of one hallucinated positive:
 *       p = (1 + #{draws with Σ_{X'} s ≥ Σ_X s}) / samples, from samples − 1 uniform random X'.
 *   |X| must equal |Y| (the reference asserts it).
 *
 * Ties are compared up to the rounding bound of the two sums (2n·ε·Σ|s|), so that a partition whose
 * sum equals the observed one mathematically counts as a tie whatever the order of summation; the
 * reference compares the float sums with `==`, which agrees except when rounding splits a true tie.
 *
 * Cosines and means are accumulated in float64.
 */
import { Rng } from '../../util/rng.js';
import { quantile } from './bootstrap.js';

/** Default number of permutation samples, and the exact-test threshold (sent-bias / bias-bench n_samples). */
export const PERMUTATION_SAMPLES = 100_000;

export function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new RangeError(`cosine of vectors of length ${a.length} and ${b.length}`);
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    ab += x * y;
    aa += x * x;
    bb += y * y;
  }
  return ab / Math.sqrt(aa * bb);
}

/** s(w, A, B) for every w in `targets`. */
export function associations(
  targets: readonly ArrayLike<number>[],
  A: readonly ArrayLike<number>[],
  B: readonly ArrayLike<number>[],
): Float64Array {
  if (A.length === 0 || B.length === 0) throw new RangeError('attribute sets must not be empty');
  return Float64Array.from(targets, (w) => {
    let sa = 0;
    for (const a of A) sa += cosine(w, a);
    let sb = 0;
    for (const b of B) sb += cosine(w, b);
    return sa / A.length - sb / B.length;
  });
}

export function mean(xs: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < xs.length; i++) s += xs[i]!;
  return s / xs.length;
}

/** Sample standard deviation (ddof = 1), as numpy `std(ddof=1)`; NaN for fewer than 2 values. */
export function sampleStd(xs: ArrayLike<number>): number {
  const n = xs.length;
  if (n < 2) return NaN;
  const m = mean(xs);
  let ss = 0;
  for (let i = 0; i < n; i++) ss += (xs[i]! - m) ** 2;
  return Math.sqrt(ss / (n - 1));
}

/** WEAT effect size from the association values of X and Y: (mean sX − mean sY) / std(sX ∪ sY, ddof 1). */
export function effectSize(sX: ArrayLike<number>, sY: ArrayLike<number>): number {
  const all = new Float64Array(sX.length + sY.length);
  all.set(Array.from(sX), 0);
  all.set(Array.from(sY), sX.length);
  return (mean(sX) - mean(sY)) / sampleStd(all);
}

/** C(n, k) as a float (exact for every value that fits a double's integers; Infinity beyond). */
export function binomial(n: number, k: number): number {
  if (k < 0 || k > n) return 0;
  k = Math.min(k, n - k);
  let c = 1;
  for (let i = 1; i <= k; i++) c = (c * (n - k + i)) / i;
  return Math.round(c);
}

export interface PermutationResult {
  /** One-sided p-value of the WEAT statistic. */
  p: number;
  method: 'exact' | 'sampled';
  /** Partitions counted in the denominator: C(2n, n) when exact, `samples` when sampled. */
  partitions: number;
  /** Partitions (other than the observed one, when exact) whose statistic tied the observed one. */
  ties: number;
}

export interface PermutationOptions {
  /** Exact test when C(2n, n) ≤ samples, otherwise samples − 1 draws plus one hallucinated hit. */
  samples?: number;
  seed: number;
}

const TWO32 = 4294967296;

/** One-sided permutation p-value of Σ_X s − Σ_Y s over equal-size re-partitions of X ∪ Y. */
export function permutationPValue(sX: ArrayLike<number>, sY: ArrayLike<number>, opts: PermutationOptions): PermutationResult {
  const n = sX.length;
  if (n !== sY.length) throw new RangeError(`the permutation test needs |X| = |Y|, got ${n} and ${sY.length}`);
  if (n === 0) throw new RangeError('the permutation test needs non-empty target sets');
  if (2 * n >= 2 ** 21) throw new RangeError(`target sets of ${n} are too large for the permutation test`);
  const samples = opts.samples ?? PERMUTATION_SAMPLES;
  if (!Number.isInteger(samples) || samples < 1) throw new RangeError(`permutation samples must be a positive integer, got ${samples}`);
  const xy = new Float64Array(2 * n);
  let absSum = 0;
  for (let i = 0; i < n; i++) {
    xy[i] = sX[i]!;
    xy[n + i] = sY[i]!;
  }
  for (let i = 0; i < 2 * n; i++) absSum += Math.abs(xy[i]!);
  let observed = 0;
  for (let i = 0; i < n; i++) observed += xy[i]!;
  // Two sums of the same n numbers in different orders differ by at most 2(n−1)·(ε/2)·Σ|s| each.
  const tol = 2 * n * Number.EPSILON * absSum;
  const threshold = observed - tol;
  const isTie = (v: number) => Math.abs(v - observed) <= tol;

  const total = binomial(2 * n, n);
  if (total <= samples) {
    // Exact: every n-subset of the 2n indices, in lexicographic order (the first one is X itself).
    const idx = Int32Array.from({ length: n }, (_, i) => i);
    let hits = 0;
    let ties = 0;
    let count = 0;
    for (;;) {
      let s = 0;
      for (let i = 0; i < n; i++) s += xy[idx[i]!]!;
      count++;
      if (s >= threshold) {
        hits++;
        if (count > 1 && isTie(s)) ties++;
      }
      // Next combination.
      let i = n - 1;
      while (i >= 0 && idx[i] === n + i) i--; // position i is at its last value, n + i
      if (i < 0) break;
      idx[i]!++;
      for (let j = i + 1; j < n; j++) idx[j] = idx[j - 1]! + 1;
    }
    return { p: hits / count, method: 'exact', partitions: count, ties };
  }

  // Sampled: a uniform random n-subset per draw (partial Fisher–Yates over the 2n positions). The
  // index draws are the hot loop (n per draw, 10^5 draws), so the generator is inlined here: the
  // xoshiro128** step of Rng, its state seeded from Rng(seed), with Lemire's unbiased bounded integer
  // (u·m < 2^53 is exact in a double; `>>> 0` takes its low 32 bits, which decide the rare rejection).
  const seeder = new Rng(opts.seed);
  let s0 = seeder.nextU32() | 0;
  let s1 = seeder.nextU32() | 0;
  let s2 = seeder.nextU32() | 0;
  let s3 = seeder.nextU32() | 0;
  if ((s0 | s1 | s2 | s3) === 0) s0 = 1;
  const work = Float64Array.from(xy);
  let hits = 1; // the reference's hallucinated positive observation
  let ties = 0;
  for (let d = 0; d < samples - 1; d++) {
    let s = 0;
    for (let i = 0; i < n; i++) {
      const m = 2 * n - i;
      let x: number;
      let low: number;
      for (;;) {
        const r = Math.imul(s1, 5);
        const u = Math.imul((r << 7) | (r >>> 25), 9) >>> 0;
        const t = s1 << 9;
        s2 ^= s0;
        s3 ^= s1;
        s1 ^= s2;
        s0 ^= s3;
        s2 ^= t;
        s3 = (s3 << 11) | (s3 >>> 21);
        x = u * m;
        low = x >>> 0;
        if (low >= m || low >= (TWO32 - m) % m) break;
      }
      const j = i + (x - low) / TWO32;
      const v = work[j]!;
      work[j] = work[i]!;
      work[i] = v;
      s += v;
    }
    if (s >= threshold) {
      hits++;
      if (isTie(s)) ties++;
    }
  }
  return { p: hits / samples, method: 'sampled', partitions: samples, ties };
}

/**
 * Bootstrap replicates of the effect size, resampling X and Y separately with replacement (the
 * attribute sets, and so each target's s value, stay fixed). A replicate whose pooled values are all
 * equal has no effect size and is NaN.
 */
export function effectSizeReplicates(sX: ArrayLike<number>, sY: ArrayLike<number>, opts: { seed: number; resamples: number }): Float64Array {
  const nx = sX.length;
  const ny = sY.length;
  const rng = new Rng(opts.seed);
  const out = new Float64Array(opts.resamples);
  const rx = new Float64Array(nx);
  const ry = new Float64Array(ny);
  for (let b = 0; b < opts.resamples; b++) {
    for (let i = 0; i < nx; i++) rx[i] = sX[rng.int(nx)]!;
    for (let i = 0; i < ny; i++) ry[i] = sY[rng.int(ny)]!;
    out[b] = effectSize(rx, ry);
  }
  return out;
}

/** 2.5th and 97.5th percentiles (numpy "linear") of the non-NaN values. */
export function percentileCI(values: ArrayLike<number>): [number, number] {
  const v = Array.from(values).filter((x) => !Number.isNaN(x));
  v.sort((a, b) => a - b);
  return [quantile(v, 0.025), quantile(v, 0.975)];
}

export interface WeatResult {
  effectSize: number;
  /** s(w, A, B) for X then Y. */
  sX: Float64Array;
  sY: Float64Array;
  permutation: PermutationResult;
}

/** A whole WEAT on four sets of vectors. */
export function weat(
  X: readonly ArrayLike<number>[],
  Y: readonly ArrayLike<number>[],
  A: readonly ArrayLike<number>[],
  B: readonly ArrayLike<number>[],
  opts: PermutationOptions,
): WeatResult {
  const sX = associations(X, A, B);
  const sY = associations(Y, A, B);
  return { effectSize: effectSize(sX, sY), sX, sY, permutation: permutationPValue(sX, sY, opts) };
}
