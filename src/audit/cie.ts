/**
 * Compression-identified exemplars (Hooker, Courville, Clark, Dauphin & Frome, "What do compressed
 * deep neural networks forget?", 2019; Hooker, Moorosi, Clark, Bengio & Denton, "Characterising bias
 * in compressed models", 2020): the items whose outcome changes between the dense and the compressed
 * model. Hooker et al. find that compression keeps the average while hurting a small set of items that
 * concentrate on under-represented groups; here we list the flips, their rate per group, and test
 * whether a group is over-represented among the flips with Fisher's exact test, Holm-adjusted across
 * the groups.
 *
 * An item is comparable when both models give it a binary outcome (ItemScore.outcome 0 or 1); items
 * with a null/absent outcome on either side are counted as `skipped`, never as flips.
 */
import type { ItemScore } from '../measure/types.js';
import { DikeError } from '../errors.js';
import { holm, logHypergeometricPmf, logSumExp, pairOutcomes } from './paired.js';

export type FlipDirection = 'became-biased' | 'became-unbiased';

export interface Flip {
  id: string;
  group: string;
  /** Outcome under the dense model (1 = biased choice). */
  dense: 0 | 1;
  compressed: 0 | 1;
  /** 0 → 1 is "became-biased", 1 → 0 "became-unbiased". */
  direction: FlipDirection;
  denseScore: number;
  compressedScore: number;
}

export interface FlipCounts {
  /** Comparable items (binary outcome under both models). */
  items: number;
  flips: number;
  becameBiased: number;
  becameUnbiased: number;
  /** flips / items (NaN when there are no comparable items). */
  rate: number;
  /** Items left out because an outcome is null on either side. */
  skipped: number;
}

export interface FlipSummary {
  /** The flipped items, in the dense results' order. */
  flips: Flip[];
  /** Counts over all items. */
  total: FlipCounts;
  /** Counts per group, in first-seen order of the dense results. */
  groups: Record<string, FlipCounts>;
}

function emptyCounts(): FlipCounts {
  return { items: 0, flips: 0, becameBiased: 0, becameUnbiased: 0, rate: NaN, skipped: 0 };
}

/**
 * The items whose binary outcome differs between the dense and the compressed results (paired by id;
 * a missing or extra id is an error), with the flip rate overall and per group.
 */
export function flips(dense: readonly ItemScore[], compressed: readonly ItemScore[]): FlipSummary {
  const p = pairOutcomes(dense, compressed);
  const total = emptyCounts();
  const groups: Record<string, FlipCounts> = {};
  const list: Flip[] = [];
  for (let i = 0; i < p.ids.length; i++) {
    const g = p.groups[i]!;
    const gc = (groups[g] ??= emptyCounts());
    const d = p.denseOutcome[i];
    const c = p.compressedOutcome[i];
    if (d == null || c == null) {
      total.skipped++;
      gc.skipped++;
      continue;
    }
    total.items++;
    gc.items++;
    if (d === c) continue;
    const direction: FlipDirection = c === 1 ? 'became-biased' : 'became-unbiased';
    for (const t of [total, gc]) {
      t.flips++;
      if (c === 1) t.becameBiased++;
      else t.becameUnbiased++;
    }
    list.push({ id: p.ids[i]!, group: g, dense: d, compressed: c, direction, denseScore: p.dense[i]!, compressedScore: p.compressed[i]! });
  }
  for (const t of [total, ...Object.values(groups)]) t.rate = t.items === 0 ? NaN : t.flips / t.items;
  return { flips: list, total, groups };
}

export interface FisherResult {
  /** Two-sided p: total probability of the tables (same margins) no more probable than the observed. */
  twoSided: number;
  /** One-sided p for a positive association (odds ratio > 1): P(X ≥ a). */
  greater: number;
  /** One-sided p for a negative association: P(X ≤ a). */
  less: number;
  /** Sample odds ratio ad / (bc) (scipy's statistic); Infinity when bc = 0 < ad, NaN when both are 0. */
  oddsRatio: number;
}

/** Relative tolerance under which a table counts as exactly as probable as the observed one. */
const FISHER_REL_TOL = 1e-7;

/**
 * Fisher's exact test on the 2×2 table [[a, b], [c, d]], with scipy.stats.fisher_exact's definitions.
 * With the margins fixed, the top-left cell X is hypergeometric: a + c draws from a population of
 * a + b + c + d holding a + b successes, over max(0, (a+c) − (c+d)) ≤ x ≤ min(a+b, a+c).
 *
 *   twoSided = Σ_{x : P(x) ≤ P(a)} P(x)   ("more extreme" = no more probable than the observed table;
 *              ties are taken with a relative tolerance of 1e-7, so that tables equally probable in
 *              exact arithmetic count whatever the rounding)
 *   greater  = P(X ≥ a),  less = P(X ≤ a)
 *
 * Probabilities are computed in log space and summed with log-sum-exp, so large tables neither
 * overflow nor lose their small tails; each p is capped at 1.
 */
export function fisherExact(a: number, b: number, c: number, d: number): FisherResult {
  for (const [name, v] of [['a', a], ['b', b], ['c', c], ['d', d]] as const)
    if (!Number.isInteger(v) || v < 0) throw new RangeError(`fisherExact: ${name} = ${v} is not a count`);
  const successes = a + b;
  const failures = c + d;
  const draws = a + c;
  const lo = Math.max(0, draws - failures);
  const hi = Math.min(draws, successes);
  const logP = new Float64Array(hi - lo + 1);
  for (let x = lo; x <= hi; x++) logP[x - lo] = logHypergeometricPmf(x, successes, failures, draws);
  const observed = logP[a - lo]!;
  const cutoff = observed + Math.log1p(FISHER_REL_TOL);
  const two: number[] = [];
  for (const l of logP) if (l <= cutoff) two.push(l);
  const ad = a * d;
  const bc = b * c;
  return {
    twoSided: Math.min(1, Math.exp(logSumExp(two))),
    greater: Math.min(1, Math.exp(logSumExp(logP.subarray(a - lo)))),
    less: Math.min(1, Math.exp(logSumExp(logP.subarray(0, a - lo + 1)))),
    oddsRatio: bc === 0 ? (ad === 0 ? NaN : Infinity) : ad / bc,
  };
}

export interface GroupOverRepresentation {
  group: string;
  /** Flipped items in the group, and all (comparable) items in it. */
  flips: number;
  items: number;
  /** The group's share of all flips, and of all items (NaN when there are no flips / no items). */
  flipShare: number;
  itemShare: number;
  /** flipShare / itemShare: above 1 means the group flips more often than its size predicts. */
  ratio: number;
  /** Fisher exact on [[flips, items − flips], [rest flips, rest items − rest flips]]: two-sided … */
  p: number;
  /** … and one-sided for over-representation (odds ratio > 1). */
  pGreater: number;
  /** Holm-adjusted across the groups (two-sided and one-sided families adjusted separately). */
  pHolm: number;
  pGreaterHolm: number;
}

/**
 * Over-representation of each group among the flips versus its share of the items, in the order of
 * `itemsByGroup`. For each group g the 2×2 table is (group g vs the rest) × (flipped vs not), tested
 * with Fisher's exact test; p-values are Holm-adjusted across the groups. A group in `flipsByGroup`
 * but not in `itemsByGroup`, or with more flips than items, is an error.
 */
export function overRepresentation(
  flipsByGroup: Readonly<Record<string, number>>,
  itemsByGroup: Readonly<Record<string, number>>,
): GroupOverRepresentation[] {
  for (const g of Object.keys(flipsByGroup))
    if (!(g in itemsByGroup)) throw new DikeError('', `group ${JSON.stringify(g)}`, 'has flips but no items');
  const groups = Object.keys(itemsByGroup);
  let F = 0;
  let N = 0;
  for (const g of groups) {
    const f = flipsByGroup[g] ?? 0;
    const n = itemsByGroup[g]!;
    if (!Number.isInteger(f) || !Number.isInteger(n) || f < 0 || f > n)
      throw new DikeError('', `group ${JSON.stringify(g)}`, `${f} flips among ${n} items`);
    F += f;
    N += n;
  }
  const rows = groups.map((g) => {
    const f = flipsByGroup[g] ?? 0;
    const n = itemsByGroup[g]!;
    const fisher = fisherExact(f, n - f, F - f, N - n - (F - f));
    const flipShare = F === 0 ? NaN : f / F;
    const itemShare = N === 0 ? NaN : n / N;
    return { group: g, flips: f, items: n, flipShare, itemShare, ratio: flipShare / itemShare, p: fisher.twoSided, pGreater: fisher.greater };
  });
  const adj = holm(rows.map((r) => r.p));
  const adjGreater = holm(rows.map((r) => r.pGreater));
  return rows.map((r, i) => ({ ...r, pHolm: adj[i]!, pGreaterHolm: adjGreater[i]! }));
}

/** Per-group flip and item counts from a FlipSummary, for `overRepresentation`. */
export function flipCountsByGroup(s: FlipSummary): { flipsByGroup: Record<string, number>; itemsByGroup: Record<string, number> } {
  const flipsByGroup: Record<string, number> = {};
  const itemsByGroup: Record<string, number> = {};
  for (const [g, c] of Object.entries(s.groups)) {
    flipsByGroup[g] = c.flips;
    itemsByGroup[g] = c.items;
  }
  return { flipsByGroup, itemsByGroup };
}
