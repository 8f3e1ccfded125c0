/**
 * Paired statistics for the audit: the same items scored by the dense and a compressed model.
 * Pure functions over plain data; every random step is seeded.
 *
 *   pairOutcomes          align two item lists by id (a missing, extra or duplicated id is an error)
 *   pairedBootstrapDelta  Δ = stat(compressed) − stat(dense), percentile CI from resampling the items
 *                         jointly (the same indices for both models), Efron & Tibshirani 1993 ch. 13
 *   mcnemarExact          exact conditional McNemar test on the discordant pairs (binomial, p = ½)
 *   pairedPermutationTest sign-flip permutation test of the mean paired difference
 *   holm                  Holm–Bonferroni step-down adjusted p-values (Holm 1979)
 *
 * Binomial and hypergeometric probabilities are computed in log space with Loader's saddle-point
 * expansion (C. Loader, "Fast and accurate computation of binomial probabilities", 2000):
 *
 *   P(X = x; n, p) = √(n / (2π x (n−x))) · exp(δ(n) − δ(x) − δ(n−x) − D(x, np) − D(n−x, nq))
 *
 * with δ(k) = ln k! − [(k+½) ln k − k + ½ ln 2π] (the Stirling remainder) and
 * D(x, M) = x ln(x/M) + M − x (the deviance term, summed as a series when x ≈ M so nothing cancels).
 * Each probability is then accurate to a few ulps for any n, with no overflow and no lgamma
 * differences of numbers near 10⁶, so McNemar's and Fisher's tests work for n up to 10⁵ and beyond.
 */
import { Rng } from '../util/rng.js';
import { quantile } from '../measure/stats/bootstrap.js';
import { DikeError } from '../errors.js';
import type { ItemScore } from '../measure/types.js';

// ───────────────────────────── log-space distributions ─────────────────────────────

const LN_2PI = Math.log(2 * Math.PI);
const HALF_LN_2PI = 0.5 * LN_2PI;

/** δ(k) for k = 0..15, from ln k! computed as the log of the exact integer k! (< 2⁵³ for k ≤ 15). */
const STIRLING_REMAINDER_SMALL: readonly number[] = (() => {
  const t: number[] = [NaN]; // δ(0) is not used: x = 0 and x = n are handled separately.
  let f = 1;
  for (let k = 1; k <= 15; k++) {
    f *= k;
    t.push(Math.log(f) - ((k + 0.5) * Math.log(k) - k + HALF_LN_2PI));
  }
  return t;
})();

/**
 * Stirling remainder δ(k) = ln k! − [(k+½) ln k − k + ½ ln 2π] for integer k ≥ 1. For k > 15 the
 * asymptotic series 1/(12k) − 1/(360k³) + 1/(1260k⁵) − 1/(1680k⁷) + 1/(1188k⁹) (Bernoulli numbers
 * B₂…B₁₀) is exact to below 1e-16; the next term is 691/(360360 k¹¹).
 */
function stirlingRemainder(k: number): number {
  if (k <= 15) return STIRLING_REMAINDER_SMALL[k]!;
  const k2 = k * k;
  return (1 / 12 - (1 / 360 - (1 / 1260 - (1 / 1680 - 1 / (1188 * k2)) / k2) / k2) / k2) / k;
}

/**
 * D(x, M) = x ln(x/M) + M − x ≥ 0. When |x − M| is small relative to x + M, write v = (x−M)/(x+M),
 * so that x/M = (1+v)/(1−v), ln(x/M) = 2 atanh v and D = (x−M)v + 2x Σ_{j≥1} v^(2j+1)/(2j+1):
 * every term is positive, so nothing cancels.
 */
function deviance(x: number, M: number): number {
  if (Math.abs(x - M) < 0.1 * (x + M)) {
    const v = (x - M) / (x + M);
    let s = (x - M) * v;
    let term = 2 * x * v;
    const v2 = v * v;
    for (let j = 1; j < 1000; j++) {
      term *= v2;
      const next = s + term / (2 * j + 1);
      if (next === s) return next;
      s = next;
    }
    return s;
  }
  return x * Math.log(x / M) + M - x;
}

/**
 * ln P(X = x) for X ~ Binomial(n, p), with q = 1 − p passed separately so that a q close to 0 keeps
 * its precision. Integers 0 ≤ x ≤ n; returns −Infinity outside the support.
 */
export function logBinomialPmf(x: number, n: number, p: number, q: number = 1 - p): number {
  if (x < 0 || x > n) return -Infinity;
  if (p === 0) return x === 0 ? 0 : -Infinity;
  if (q === 0) return x === n ? 0 : -Infinity;
  if (x === 0) return n === 0 ? 0 : p < 0.1 ? n * Math.log1p(-p) : n * Math.log(q);
  if (x === n) return q < 0.1 ? n * Math.log1p(-q) : n * Math.log(p);
  const lc =
    stirlingRemainder(n) - stirlingRemainder(x) - stirlingRemainder(n - x) - deviance(x, n * p) - deviance(n - x, n * q);
  // ln(2π x (n−x)/n), with (n−x)/n written as 1 − x/n.
  const lf = LN_2PI + Math.log(x) + Math.log1p(-x / n);
  return lc - 0.5 * lf;
}

/**
 * ln P(X = x) for the hypergeometric X = number of successes among `draws` items drawn without
 * replacement from `successes` successes and `failures` failures. Uses the identity
 * P = Bin(x; S, p) · Bin(draws − x; F, p) / Bin(draws; S + F, p), which holds for any p; p = draws/(S+F)
 * puts every factor near its mode, where Loader's expansion is most accurate.
 */
export function logHypergeometricPmf(x: number, successes: number, failures: number, draws: number): number {
  const N = successes + failures;
  if (x < Math.max(0, draws - failures) || x > Math.min(draws, successes)) return -Infinity;
  const p = draws / N;
  const q = (N - draws) / N;
  return (
    logBinomialPmf(x, successes, p, q) + logBinomialPmf(draws - x, failures, p, q) - logBinomialPmf(draws, N, p, q)
  );
}

/** ln Σ exp(xs[i]), stable: the largest term is factored out. Empty or all −Infinity → −Infinity. */
export function logSumExp(xs: ArrayLike<number>): number {
  let max = -Infinity;
  for (let i = 0; i < xs.length; i++) if (xs[i]! > max) max = xs[i]!;
  if (max === -Infinity) return -Infinity;
  let s = 0;
  for (let i = 0; i < xs.length; i++) s += Math.exp(xs[i]! - max);
  return max + Math.log(s);
}

// ───────────────────────────── pairing ─────────────────────────────

/** Two item lists aligned by id, in the dense list's order. */
export interface PairedItems {
  ids: string[];
  groups: string[];
  dense: Float64Array;
  compressed: Float64Array;
  denseOutcome: (0 | 1 | null)[];
  compressedOutcome: (0 | 1 | null)[];
}

/**
 * Align the dense and compressed item scores by item id. Every id must appear exactly once in each
 * list and carry the same group in both: a missing, extra or duplicated id (or a changed group) is a
 * DikeError naming it — items are never silently dropped, since that would bias the comparison.
 */
export function pairOutcomes(denseItems: readonly ItemScore[], compressedItems: readonly ItemScore[]): PairedItems {
  const byId = new Map<string, ItemScore>();
  for (const it of compressedItems) {
    if (byId.has(it.id)) throw new DikeError('', `item ${JSON.stringify(it.id)}`, 'appears twice in the compressed results');
    byId.set(it.id, it);
  }
  const seen = new Set<string>();
  const n = denseItems.length;
  const out: PairedItems = {
    ids: [],
    groups: [],
    dense: new Float64Array(n),
    compressed: new Float64Array(n),
    denseOutcome: [],
    compressedOutcome: [],
  };
  denseItems.forEach((d, i) => {
    const where = `item ${JSON.stringify(d.id)}`;
    if (seen.has(d.id)) throw new DikeError('', where, 'appears twice in the dense results');
    seen.add(d.id);
    const c = byId.get(d.id);
    if (c === undefined) throw new DikeError('', where, 'is in the dense results but missing from the compressed results');
    if (c.group !== d.group)
      throw new DikeError('', where, `has group ${JSON.stringify(d.group)} in the dense results but ${JSON.stringify(c.group)} in the compressed results`);
    out.ids.push(d.id);
    out.groups.push(d.group);
    out.dense[i] = d.score;
    out.compressed[i] = c.score;
    out.denseOutcome.push(d.outcome ?? null);
    out.compressedOutcome.push(c.outcome ?? null);
  });
  for (const c of compressedItems)
    if (!seen.has(c.id))
      throw new DikeError('', `item ${JSON.stringify(c.id)}`, 'is in the compressed results but missing from the dense results');
  return out;
}

/** The 2×2 table of paired binary outcomes (pairs where either outcome is null are counted apart). */
export interface DiscordantCounts {
  /** dense 1, compressed 1 */
  both: number;
  /** dense 0, compressed 0 */
  neither: number;
  /** dense 1, compressed 0 (became unbiased) */
  b: number;
  /** dense 0, compressed 1 (became biased) */
  c: number;
  /** pairs with a null outcome on either side, left out of the table */
  undefined: number;
}

export function discordantCounts(
  denseOutcome: readonly (0 | 1 | null | undefined)[],
  compressedOutcome: readonly (0 | 1 | null | undefined)[],
): DiscordantCounts {
  if (denseOutcome.length !== compressedOutcome.length)
    throw new RangeError(`discordantCounts: ${denseOutcome.length} dense vs ${compressedOutcome.length} compressed outcomes`);
  const t: DiscordantCounts = { both: 0, neither: 0, b: 0, c: 0, undefined: 0 };
  for (let i = 0; i < denseOutcome.length; i++) {
    const d = denseOutcome[i];
    const c = compressedOutcome[i];
    if (d == null || c == null) t.undefined++;
    else if (d === 1 && c === 1) t.both++;
    else if (d === 0 && c === 0) t.neither++;
    else if (d === 1) t.b++;
    else t.c++;
  }
  return t;
}

// ───────────────────────────── paired bootstrap ─────────────────────────────

/** A statistic of the values at the given (resampled) item indices. */
export type PairedStat = (values: ArrayLike<number>, idx: Int32Array) => number;

/** The mean of values[idx]. */
export const meanAt: PairedStat = (values, idx) => {
  let s = 0;
  for (let i = 0; i < idx.length; i++) s += values[idx[i]!]!;
  return s / idx.length;
};

export interface PairedDelta {
  /** stat(compressed) − stat(dense) on all items. */
  delta: number;
  /** Percentile 95% CI of Δ over joint resamples. */
  ci95: [number, number];
  n: number;
  /** stat(dense) and stat(compressed) on all items. */
  dense: number;
  compressed: number;
  /** Resamples whose Δ was finite (a statistic may be undefined, NaN, on some resamples). */
  resamples: number;
}

/**
 * Paired percentile bootstrap of Δ = stat(compressed) − stat(dense). Each resample draws n item
 * indices with replacement and evaluates the statistic of *both* models on the same indices, so the
 * item-to-item correlation between the models is kept (an unpaired bootstrap would widen the CI by
 * the between-item variance, which the paired design cancels). Resamples where Δ is NaN are dropped,
 * as in `bootstrapCI`. n = 0 gives NaN everywhere.
 */
export function pairedBootstrapDelta(
  dense: ArrayLike<number>,
  compressed: ArrayLike<number>,
  opts: { seed: number; resamples: number; stat?: PairedStat },
): PairedDelta {
  const n = dense.length;
  if (compressed.length !== n) throw new RangeError(`pairedBootstrapDelta: ${n} dense vs ${compressed.length} compressed values`);
  const stat = opts.stat ?? meanAt;
  const all = Int32Array.from({ length: n }, (_, i) => i);
  const sd = n === 0 ? NaN : stat(dense, all);
  const sc = n === 0 ? NaN : stat(compressed, all);
  if (n === 0) return { delta: NaN, ci95: [NaN, NaN], n, dense: sd, compressed: sc, resamples: 0 };
  const rng = new Rng(opts.seed);
  const idx = new Int32Array(n);
  const deltas: number[] = [];
  for (let r = 0; r < opts.resamples; r++) {
    for (let i = 0; i < n; i++) idx[i] = rng.int(n);
    const v = stat(compressed, idx) - stat(dense, idx);
    if (!Number.isNaN(v)) deltas.push(v);
  }
  deltas.sort((a, b) => a - b);
  return {
    delta: sc - sd,
    ci95: [quantile(deltas, 0.025), quantile(deltas, 0.975)],
    n,
    dense: sd,
    compressed: sc,
    resamples: deltas.length,
  };
}

// ───────────────────────────── McNemar ─────────────────────────────

/**
 * Exact (conditional) McNemar test, two-sided, as statsmodels `mcnemar(table, exact=True)`: given the
 * n = b + c discordant pairs, b ~ Binomial(n, ½) under the null of equal marginals, and
 *
 *   p = min(1, 2 · P(X ≤ min(b, c))),   X ~ Binomial(b + c, ½)
 *
 * (doubling the smaller tail; |b − c| ≤ 1 gives 1, and n = 0 gives 1: no discordant pair, no evidence).
 * b counts pairs with dense 1 and compressed 0, c the reverse; the test is symmetric in them.
 * The tail is summed in log space from its largest term, so n of 10⁵ or more is fine.
 */
export function mcnemarExact(b: number, c: number): number {
  for (const [name, v] of [['b', b], ['c', c]] as const)
    if (!Number.isInteger(v) || v < 0) throw new RangeError(`mcnemarExact: ${name} = ${v} is not a count`);
  const n = b + c;
  if (n === 0) return 1;
  const k = Math.min(b, c);
  // |b − c| ≤ 1: by the symmetry of Binomial(n, ½) the smaller tail holds at least half the mass,
  // so p is exactly 1 (summing would give 1 − ulp).
  if (2 * k + 1 >= n) return 1;
  // Terms decrease from x = k down to 0 (k < n/2 lies below the mode); stop once they no longer
  // change the sum.
  const top = logBinomialPmf(k, n, 0.5, 0.5);
  let s = 0;
  for (let x = k; x >= 0; x--) {
    const t = Math.exp(logBinomialPmf(x, n, 0.5, 0.5) - top);
    const next = s + t;
    if (next === s) break;
    s = next;
  }
  return Math.min(1, 2 * Math.exp(top + Math.log(s)));
}

// ───────────────────────────── permutation test ─────────────────────────────

export interface PermutationResult {
  /** Mean of compressed − dense over the items. */
  statistic: number;
  /** Two-sided p-value. */
  p: number;
  n: number;
  /** Items with a non-zero difference (only these are sign-flipped; zeros cannot change T*). */
  nonzero: number;
  method: 'exact' | 'monte-carlo';
  /** Sign patterns evaluated: 2^nonzero when exact, the number of random draws otherwise. */
  samples: number;
}

/** Default number of Monte Carlo sign-flip draws. */
export const PERMUTATION_SAMPLES = 10_000;
/** Default largest number of sign patterns enumerated exactly (2^16 = 65,536 ≤ 10⁵ < 2^17). */
export const EXACT_LIMIT = 100_000;

/**
 * Paired sign-flip permutation test of the mean difference d_i = compressed_i − dense_i. Under the
 * null that the two models' scores are exchangeable within each item, each d_i is equally likely to
 * have either sign, so T* = Σ s_i d_i with independent random signs s_i = ±1 is the null distribution
 * of T = Σ d_i (the mean differs from the sum by the constant 1/n). Two-sided: more extreme means
 * |T*| ≥ |T|.
 *
 * - Zero differences are left out of the flipping (they add 0 to every T*, so the p-value is the same)
 *   and m is the count of the rest.
 * - Exact when 2^m ≤ exactLimit: all 2^m sign patterns, the observed one included,
 *   p = #{|T*| ≥ |T|} / 2^m.
 * - Otherwise Monte Carlo with `samples` uniform random sign patterns and the +1 correction (the
 *   observed pattern counts as one draw), p = (1 + #{|T*| ≥ |T|}) / (1 + samples), which is a valid
 *   p-value (never below the exact one in expectation, never 0).
 * - Ties: a pattern whose sum equals |T| mathematically counts as extreme (conservative). Sums are
 *   compared with a tolerance of 2m·ε·Σ|d_i| — the rounding bound of two float sums of m terms — so a
 *   true tie counts whatever the rounding (e.g. 0.1 + 0.2 vs 0.3).
 * - n = 0, or all differences zero: p = 1.
 */
export function pairedPermutationTest(
  dense: ArrayLike<number>,
  compressed: ArrayLike<number>,
  opts: { seed: number; samples?: number; exactLimit?: number },
): PermutationResult {
  const n = dense.length;
  if (compressed.length !== n) throw new RangeError(`pairedPermutationTest: ${n} dense vs ${compressed.length} compressed values`);
  const diffs: number[] = [];
  let total = 0;
  for (let i = 0; i < n; i++) {
    const d = compressed[i]! - dense[i]!;
    if (Number.isNaN(d)) throw new RangeError(`pairedPermutationTest: item ${i} has a NaN difference`);
    total += d;
    if (d !== 0) diffs.push(d);
  }
  const m = diffs.length;
  const statistic = n === 0 ? NaN : total / n;
  if (m === 0) return { statistic, p: 1, n, nonzero: 0, method: 'exact', samples: 1 };

  let observed = 0;
  let abs = 0;
  for (const d of diffs) {
    observed += d;
    abs += Math.abs(d);
  }
  const threshold = Math.abs(observed) - 2 * m * Number.EPSILON * abs;
  const exactLimit = opts.exactLimit ?? EXACT_LIMIT;

  if (m < 31 && 2 ** m <= exactLimit) {
    const patterns = 2 ** m;
    let extreme = 0;
    for (let mask = 0; mask < patterns; mask++) {
      let s = 0;
      for (let i = 0; i < m; i++) s += (mask >>> i) & 1 ? -diffs[i]! : diffs[i]!;
      if (Math.abs(s) >= threshold) extreme++;
    }
    return { statistic, p: extreme / patterns, n, nonzero: m, method: 'exact', samples: patterns };
  }

  const samples = opts.samples ?? PERMUTATION_SAMPLES;
  const rng = new Rng(opts.seed);
  const d = Float64Array.from(diffs);
  let extreme = 0;
  for (let r = 0; r < samples; r++) {
    // One 32-bit draw gives the signs of 32 items: bit set → the item's difference is negated.
    let s = 0;
    for (let base = 0; base < m; base += 32) {
      const bits = rng.nextU32();
      const end = Math.min(32, m - base);
      // d·(1 − 2·bit) is exactly ±d, without a data-dependent branch (random signs mispredict).
      for (let j = 0; j < end; j++) s += d[base + j]! * (1 - 2 * ((bits >>> j) & 1));
    }
    if (Math.abs(s) >= threshold) extreme++;
  }
  return { statistic, p: (1 + extreme) / (1 + samples), n, nonzero: m, method: 'monte-carlo', samples };
}

// ───────────────────────────── multiplicity ─────────────────────────────

/**
 * Holm–Bonferroni step-down adjustment (Holm 1979), as statsmodels `multipletests(method='holm')` and
 * R `p.adjust(method='holm')`: with p₍₁₎ ≤ … ≤ p₍ₘ₎ sorted ascending,
 *
 *   p̃₍ᵢ₎ = min(1, max_{j ≤ i} (m − j + 1) · p₍ⱼ₎)
 *
 * returned in the input order. Rejecting p̃ ≤ α controls the family-wise error rate at α. Every
 * entry must be a p-value in [0, 1] (a NaN would make the family size ambiguous, so it is an error).
 */
export function holm(pValues: readonly number[]): number[] {
  const m = pValues.length;
  pValues.forEach((p, i) => {
    if (!(p >= 0 && p <= 1)) throw new RangeError(`holm: p-value ${i} is ${p}, not in [0, 1]`);
  });
  const order = Array.from({ length: m }, (_, i) => i).sort((a, b) => pValues[a]! - pValues[b]! || a - b);
  const out = new Array<number>(m);
  let running = 0;
  order.forEach((idx, j) => {
    running = Math.max(running, Math.min(1, (m - j) * pValues[idx]!));
    out[idx] = running;
  });
  return out;
}
