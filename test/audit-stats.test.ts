/**
 * Known-answer tests for the audit's paired statistics (src/audit/paired.ts) and compression-identified
 * exemplars (src/audit/cie.ts). Every expected value is worked out by hand in a comment or computed
 * independently here with exact BigInt combinatorics; scipy 1.17 / statsmodels agree where noted.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  discordantCounts,
  holm,
  logBinomialPmf,
  mcnemarExact,
  pairOutcomes,
  pairedBootstrapDelta,
  pairedPermutationTest,
} from '../src/audit/paired.js';
import { fisherExact, flipCountsByGroup, flips, overRepresentation } from '../src/audit/cie.js';
import { Rng } from '../src/util/rng.js';
import { DikeError } from '../src/errors.js';
import type { ItemScore } from '../src/measure/types.js';

function close(actual: number, expected: number, rel = 1e-12, msg = ''): void {
  const tol = rel * Math.max(1, Math.abs(expected));
  assert.ok(Math.abs(actual - expected) <= tol, `${msg} ${actual} vs ${expected} (tol ${tol})`);
}

// ── independent exact references (BigInt rationals) ──

function choose(n: number, k: number): bigint {
  if (k < 0 || k > n) return 0n;
  let r = 1n;
  for (let i = 0; i < k; i++) r = (r * BigInt(n - i)) / BigInt(i + 1);
  return r;
}

/** num/den as a double, exact to ~1 ulp even when both are far beyond 2^1024. */
function ratio(num: bigint, den: bigint): number {
  if (num === 0n) return 0;
  const scale = 10n ** 30n;
  return Number((num * scale) / den) / 1e30;
}

/** min(1, 2·P(X ≤ min(b,c))), X ~ Bin(b+c, ½), in exact integer arithmetic. */
function mcnemarBig(b: number, c: number): number {
  const n = b + c;
  if (n === 0) return 1;
  let sum = 0n;
  let term = 1n; // C(n, 0)
  for (let x = 0; x <= Math.min(b, c); x++) {
    sum += term;
    term = (term * BigInt(n - x)) / BigInt(x + 1);
  }
  return Math.min(1, ratio(2n * sum, 2n ** BigInt(n)));
}

/** Fisher two-sided and greater from the exact hypergeometric weights C(a+b, x)·C(c+d, a+c−x). */
function fisherBig(a: number, b: number, c: number, d: number): { twoSided: number; greater: number } {
  const r1 = a + b;
  const r2 = c + d;
  const c1 = a + c;
  const lo = Math.max(0, c1 - r2);
  const hi = Math.min(r1, c1);
  // Weights by exact recurrences: C(r1, x+1) = C(r1, x)(r1−x)/(x+1), C(r2, k−1) = C(r2, k)·k/(r2−k+1).
  const w: bigint[] = [];
  let left = choose(r1, lo);
  let right = choose(r2, c1 - lo);
  for (let x = lo; x <= hi; x++) {
    w.push(left * right);
    left = (left * BigInt(r1 - x)) / BigInt(x + 1);
    const k = c1 - x;
    right = k > 0 ? (right * BigInt(k)) / BigInt(r2 - k + 1) : 0n;
  }
  const total = w.reduce((s, v) => s + v, 0n); // = C(r1 + r2, c1)
  const obs = w[a - lo]!;
  let two = 0n;
  let greater = 0n;
  w.forEach((wx, i) => {
    if (wx <= obs) two += wx; // exact integers: ties are exact here
    if (lo + i >= a) greater += wx;
  });
  return { twoSided: Math.min(1, ratio(two, total)), greater: Math.min(1, ratio(greater, total)) };
}

/** Upper normal tail 1 − Φ(z) by Simpson's rule on the density over [z, z + 12]. */
function normalUpperTail(z: number): number {
  const steps = 20_000;
  const h = 12 / steps;
  const f = (t: number): number => Math.exp(-0.5 * t * t) / Math.sqrt(2 * Math.PI);
  let s = f(z) + f(z + 12);
  for (let i = 1; i < steps; i++) s += (i % 2 ? 4 : 2) * f(z + i * h);
  return (s * h) / 3;
}

describe('binomial pmf (Loader, log space)', () => {
  it('matches exact C(n,x)/2^n and C(n,x)p^x q^(n−x)', () => {
    for (const n of [1, 2, 7, 15, 16, 17, 40, 200]) {
      for (let x = 0; x <= n; x += Math.max(1, Math.floor(n / 13))) {
        close(Math.exp(logBinomialPmf(x, n, 0.5, 0.5)), ratio(choose(n, x), 2n ** BigInt(n)), 1e-13, `Bin(${x}; ${n}, ½)`);
      }
    }
    // p = 1/4: P = C(n,x)·3^(n−x)/4^n exactly.
    for (const [x, n] of [[0, 10], [3, 10], [10, 10], [25, 100], [60, 100]] as const) {
      const exact = ratio(choose(n, x) * 3n ** BigInt(n - x), 4n ** BigInt(n));
      close(Math.exp(logBinomialPmf(x, n, 0.25, 0.75)), exact, 1e-12, `Bin(${x}; ${n}, ¼)`);
    }
  });
});

describe('mcnemarExact', () => {
  it('b = 1, c = 6: hand binomial on n = 7', () => {
    // P(X ≤ 1) = (C(7,0) + C(7,1)) / 2^7 = (1 + 7)/128; two-sided p = 2·8/128 = 0.125.
    // (statsmodels mcnemar([[.,1],[6,.]], exact=True).pvalue = scipy 2·binom.cdf(1, 7, .5) = 0.125)
    close(mcnemarExact(1, 6), 0.125);
    close(mcnemarExact(6, 1), 0.125); // symmetric in b and c
  });

  it('b = 0, c = 5: 2/32', () => {
    // P(X ≤ 0) = 1/2^5; p = 2/32 = 0.0625.
    close(mcnemarExact(0, 5), 0.0625);
  });

  it('no discordant pairs, or b = c, gives 1', () => {
    assert.equal(mcnemarExact(0, 0), 1);
    for (const k of [1, 2, 7, 50, 5000]) assert.equal(mcnemarExact(k, k), 1);
    // b = 3, c = 4: 2·P(X ≤ 3) with n = 7 is 2·(1+7+21+35)/128 = 1 exactly.
    assert.equal(mcnemarExact(3, 4), 1);
    assert.equal(mcnemarExact(2500, 2499), 1);
  });

  it('matches exact integer arithmetic over a grid of small counts', () => {
    for (let b = 0; b <= 30; b += 3) for (let c = 0; c <= 45; c += 4) close(mcnemarExact(b, c), mcnemarBig(b, c), 1e-12, `b=${b} c=${c}`);
  });

  it('large n (b = 5000, c = 5200): finite, in (0, 1), exact, and near the normal approximation', () => {
    const p = mcnemarExact(5000, 5200);
    assert.ok(Number.isFinite(p) && p > 0 && p < 1, `p = ${p}`);
    // Exact reference: Σ_{x ≤ 5000} C(10200, x) / 2^10199 in BigInt arithmetic (≈ 0.04878796).
    close(p, mcnemarBig(5000, 5200), 1e-10);
    // Normal approximation with continuity correction: z = (|b − c| − 1)/√(b + c) = 199/√10200 ≈ 1.9704,
    // p ≈ 2(1 − Φ(z)) ≈ 0.0488; at n = 10200 the two agree to well under 1e-3.
    const z = (Math.abs(5000 - 5200) - 1) / Math.sqrt(10200);
    assert.ok(Math.abs(p - 2 * normalUpperTail(z)) < 1e-3, `exact ${p} vs normal ${2 * normalUpperTail(z)}`);
  });

  it('extreme counts underflow to 0 rather than overflowing or going NaN', () => {
    const p = mcnemarExact(10, 90_000);
    assert.ok(p >= 0 && p < 1e-300, `p = ${p}`);
    assert.ok(mcnemarExact(49_000, 51_000) > 0); // ≈ 2.59e-10 (scipy: 2·binom.cdf(49000, 1e5, .5))
    close(mcnemarExact(49_000, 51_000), 2.5887160383468943e-10, 1e-9);
  });

  it('rejects non-counts', () => {
    assert.throws(() => mcnemarExact(-1, 3), RangeError);
    assert.throws(() => mcnemarExact(1.5, 3), RangeError);
  });
});

describe('fisherExact', () => {
  it("Fisher's tea-tasting table [[3,1],[1,3]]", () => {
    // Margins 4/4/8: P(x) = C(4,x)C(4,4−x)/C(8,4) = (1, 16, 36, 16, 1)/70 for x = 0..4.
    // Two-sided: tables with P ≤ P(3) = 16/70 are x = 0, 1, 3, 4 → 34/70 = 0.4857142857…
    // (x = 1 ties x = 3 exactly; without the tie tolerance rounding could drop it, giving 18/70).
    // Greater: P(X ≥ 3) = 17/70 = 0.2428571428…; less: P(X ≤ 3) = 69/70.
    const r = fisherExact(3, 1, 1, 3);
    close(r.twoSided, 34 / 70);
    close(r.greater, 17 / 70);
    close(r.less, 69 / 70);
    assert.equal(r.oddsRatio, 9);
  });

  it('the whales/sharks table [[8,2],[1,5]] (scipy docs example)', () => {
    // Rows 10/6, first column 9, N = 16: weights C(10,x)C(6,9−x) for x = 3..9 are
    // 120, 1260, 3780, 4200, 1800, 270, 10 (sum 11440 = C(16,9)). Observed x = 8 (weight 270).
    // Two-sided: 120 + 270 + 10 = 400 → 400/11440 = 0.0349650349…; greater: (270 + 10)/11440.
    const r = fisherExact(8, 2, 1, 5);
    close(r.twoSided, 400 / 11440);
    close(r.greater, 280 / 11440);
    assert.equal(r.oddsRatio, 20);
  });

  it('degenerate tables', () => {
    assert.deepEqual(fisherExact(0, 0, 0, 0), { twoSided: 1, greater: 1, less: 1, oddsRatio: NaN });
    // [[1,0],[0,1]]: support x ∈ {0, 1}, each with probability 1/2 → two-sided 1, greater 1/2.
    const r = fisherExact(1, 0, 0, 1);
    assert.equal(r.oddsRatio, Infinity);
    close(r.twoSided, 1);
    close(r.greater, 0.5);
  });

  it('matches exact BigInt hypergeometric sums over random tables', () => {
    const rng = new Rng(5);
    for (let t = 0; t < 200; t++) {
      const [a, b, c, d] = [rng.int(25), rng.int(25), rng.int(25), rng.int(25)] as const;
      const got = fisherExact(a, b, c, d);
      const want = fisherBig(a, b, c, d);
      close(got.twoSided, want.twoSided, 1e-11, `two-sided [[${a},${b}],[${c},${d}]]`);
      close(got.greater, want.greater, 1e-11, `greater [[${a},${b}],[${c},${d}]]`);
    }
  });

  it('large tables stay finite and accurate', () => {
    // Exact BigInt reference over 5001 terms of ~10⁴-bit integers; scipy gives 0.004878795768906845.
    close(fisherExact(5000, 5000, 4800, 5200).twoSided, fisherBig(5000, 5000, 4800, 5200).twoSided, 1e-10);
    // A tiny p that must not underflow to a wrong value: scipy 2.3993063137200614e-16.
    close(fisherExact(100, 3000, 250, 2900).twoSided, 2.3993063137200614e-16, 1e-9);
  });
});

describe('holm', () => {
  it('adjusts a hand-worked vector, monotone and in input order', () => {
    // p = [0.01, 0.04, 0.03, 0.005], m = 4. Sorted: 0.005, 0.01, 0.03, 0.04 with multipliers 4, 3, 2, 1:
    // 0.02, 0.03, 0.06, 0.04 → running max 0.02, 0.03, 0.06, 0.06. Back in input order:
    const got = holm([0.01, 0.04, 0.03, 0.005]);
    [0.03, 0.06, 0.06, 0.02].forEach((e, i) => close(got[i]!, e, 1e-12, `index ${i}`));
  });

  it('caps at 1 and keeps the step-down maximum', () => {
    // [0.5, 0.6]: 2·0.5 = 1.0, then max(1.0, 0.6) = 1 → [1, 1].
    assert.deepEqual(holm([0.5, 0.6]), [1, 1]);
    // [0.02, 0.02, 0.9]: 3·0.02 = 0.06, max(0.06, 2·0.02) = 0.06, max(0.06, 0.9) = 0.9.
    const got = holm([0.02, 0.9, 0.02]);
    [0.06, 0.9, 0.06].forEach((e, i) => close(got[i]!, e, 1e-12));
    assert.deepEqual(holm([]), []);
    assert.deepEqual(holm([0.3]), [0.3]);
    assert.throws(() => holm([0.1, NaN]), RangeError);
  });
});

describe('pairedBootstrapDelta', () => {
  const opts = { seed: 11, resamples: 2000 };

  it('identical inputs: Δ = 0 with CI [0, 0]', () => {
    const x = [0.3, -1.2, 4.5, 2.25, 0, 7.1, -3.3];
    const r = pairedBootstrapDelta(x, x.slice(), opts);
    assert.equal(r.delta, 0);
    assert.deepEqual(r.ci95, [0, 0]);
    assert.equal(r.n, 7);
  });

  it('a constant shift: Δ and both CI ends equal the shift (joint resampling)', () => {
    // 8 items, values and shift exact in binary, so every resampled mean difference is exactly 0.75.
    // An unpaired bootstrap would give a wide interval here: the items vary from 0 to 7.
    const dense = [1, 2.5, 3, 4.25, 0, 7, 1.5, 2];
    const r = pairedBootstrapDelta(dense, dense.map((v) => v + 0.75), opts);
    assert.equal(r.delta, 0.75);
    assert.deepEqual(r.ci95, [0.75, 0.75]);
    close(r.compressed - r.dense, 0.75);
  });

  it('two items with differences 0 and 1: Δ = ½, CI [0, 1]', () => {
    // Resampled mean differences are 0, ½, 1 with probabilities ¼, ½, ¼, so the 2.5th and
    // 97.5th percentiles of 2000 resamples are 0 and 1.
    const r = pairedBootstrapDelta([5, 5], [5, 6], opts);
    assert.equal(r.delta, 0.5);
    assert.deepEqual(r.ci95, [0, 1]);
  });

  it('takes a custom statistic, is reproducible, and checks lengths', () => {
    const share1: (v: ArrayLike<number>, idx: Int32Array) => number = (v, idx) => {
      let s = 0;
      for (const i of idx) s += v[i]! > 0 ? 1 : 0;
      return s / idx.length;
    };
    const d = [1, -1, 1, -1, 1, -1, -1, -1];
    const c = [1, 1, 1, -1, 1, 1, -1, -1];
    const a = pairedBootstrapDelta(d, c, { ...opts, stat: share1 });
    const b = pairedBootstrapDelta(d, c, { ...opts, stat: share1 });
    assert.deepEqual(a, b);
    close(a.delta, 5 / 8 - 3 / 8);
    assert.ok(a.ci95[0] >= 0 && a.ci95[1] <= 0.75 && a.ci95[0] <= a.delta && a.delta <= a.ci95[1]);
    assert.throws(() => pairedBootstrapDelta([1], [1, 2], opts), RangeError);
    const empty = pairedBootstrapDelta([], [], opts);
    assert.ok(Number.isNaN(empty.delta) && empty.n === 0);
  });
});

describe('pairedPermutationTest', () => {
  it('exact on d = [1, 2, 3], all 8 sign patterns by hand', () => {
    // Σ s_i d_i for (s1 s2 s3): +++ 6, ++− 0, +−+ 2, +−− −4, −++ 4, −+− −2, −−+ 0, −−− −6.
    // Observed T = 6; |T*| ≥ 6 for +++ and −−− → p = 2/8.
    const r = pairedPermutationTest([0, 0, 0], [1, 2, 3], { seed: 1 });
    assert.equal(r.method, 'exact');
    assert.equal(r.samples, 8);
    assert.equal(r.p, 0.25);
    assert.equal(r.statistic, 2);
  });

  it('counts float ties: d = [−0.1, 0.2, 0.3]', () => {
    // Sums: ±0.6 (+++ / −−−), ±0.4 (−++ observed, +−−), ±0.2, ±0 (0.1 + 0.2 − 0.3).
    // |T*| ≥ 0.4 for 4 of 8 patterns → p = 0.5; −0.1+0.2+0.3 and 0.1−0.2−0.3 round differently in
    // floating point, so this needs the tie tolerance.
    const r = pairedPermutationTest([0.1, 0, 0], [0, 0.2, 0.3], { seed: 1 });
    assert.equal(r.p, 0.5);
  });

  it('drops zero differences and returns 1 when nothing differs', () => {
    // d = [0, 1, 2, 0]: only the 4 patterns of (1, 2) matter: 3, −1, 1, −3 → |T*| ≥ 3 twice → ½.
    const r = pairedPermutationTest([1, 1, 1, 1], [1, 2, 3, 1], { seed: 1 });
    assert.equal(r.nonzero, 2);
    assert.equal(r.p, 0.5);
    assert.equal(pairedPermutationTest([1, 2], [1, 2], { seed: 1 }).p, 1);
    assert.equal(pairedPermutationTest([], [], { seed: 1 }).p, 1);
  });

  it('Monte Carlo agrees with the exact enumeration (n = 14)', () => {
    const rng = new Rng(3);
    const dense = Array.from({ length: 14 }, () => rng.next());
    const compressed = dense.map((v) => v + (rng.next() - 0.38) * 0.5);
    const exact = pairedPermutationTest(dense, compressed, { seed: 9 });
    assert.equal(exact.method, 'exact');
    assert.equal(exact.samples, 2 ** 14);
    const mc = pairedPermutationTest(dense, compressed, { seed: 9, samples: 20_000, exactLimit: 0 });
    assert.equal(mc.method, 'monte-carlo');
    assert.ok(exact.p > 0.01 && exact.p < 0.5, `exact p = ${exact.p}`); // an informative case
    // Standard error ≤ √(¼/20000) ≈ 0.0035; allow ~4 SE.
    assert.ok(Math.abs(mc.p - exact.p) < 0.015, `mc ${mc.p} vs exact ${exact.p}`);
    assert.deepEqual(pairedPermutationTest(dense, compressed, { seed: 9, samples: 20_000, exactLimit: 0 }), mc);
  });

  it('Monte Carlo uses the +1 correction, so p is never 0', () => {
    // 40 differences all equal to 1: only the all-plus and all-minus patterns reach |T| = 40.
    const n = 40;
    const r = pairedPermutationTest(new Array(n).fill(0), new Array(n).fill(1), { seed: 2, samples: 999 });
    assert.equal(r.method, 'monte-carlo');
    assert.equal(r.p, 1 / 1000);
  });
});

const item = (id: string, group: string, score: number, outcome: 0 | 1 | null): ItemScore => ({ id, group, score, outcome });

describe('pairOutcomes', () => {
  it('aligns by id in the dense order', () => {
    const p = pairOutcomes(
      [item('a', 'g', 1, 1), item('b', 'h', 2, 0)],
      [item('b', 'h', 20, 1), item('a', 'g', 10, null)],
    );
    assert.deepEqual(p.ids, ['a', 'b']);
    assert.deepEqual(p.groups, ['g', 'h']);
    assert.deepEqual([...p.dense], [1, 2]);
    assert.deepEqual([...p.compressed], [10, 20]);
    assert.deepEqual(p.denseOutcome, [1, 0]);
    assert.deepEqual(p.compressedOutcome, [null, 1]);
    assert.deepEqual(discordantCounts(p.denseOutcome, p.compressedOutcome), { both: 0, neither: 0, b: 0, c: 1, undefined: 1 });
  });

  it('names a missing, extra or duplicated id', () => {
    const d = [item('a', 'g', 1, 1), item('b', 'g', 2, 0)];
    const err = (fn: () => unknown, id: string) =>
      assert.throws(fn, (e: unknown) => e instanceof DikeError && e.message.includes(`"${id}"`));
    err(() => pairOutcomes(d, [item('a', 'g', 1, 1)]), 'b');
    err(() => pairOutcomes(d, [...d, item('zz', 'g', 0, 0)]), 'zz');
    err(() => pairOutcomes([...d, item('a', 'g', 3, 1)], d), 'a');
    err(() => pairOutcomes(d, [item('a', 'other', 1, 1), item('b', 'g', 2, 0)]), 'a');
  });
});

describe('compression-identified exemplars', () => {
  // race: r1 1→1, r2 0→1, r3 1→0, r4 0→1, r5 0→0, r6 1→1  → 6 comparable, 3 flips (2 biased, 1 unbiased)
  // gender: g1 1→1, g2 0→0, g3 0→1, g4 null→1, g5 1→1    → 4 comparable, 1 flip (biased), 1 skipped
  const outcomes: [string, string, 0 | 1 | null, 0 | 1 | null][] = [
    ['r1', 'race', 1, 1], ['r2', 'race', 0, 1], ['g1', 'gender', 1, 1], ['r3', 'race', 1, 0],
    ['g2', 'gender', 0, 0], ['r4', 'race', 0, 1], ['g3', 'gender', 0, 1], ['r5', 'race', 0, 0],
    ['g4', 'gender', null, 1], ['r6', 'race', 1, 1], ['g5', 'gender', 1, 1],
  ];
  const dense = outcomes.map(([id, g, d], i) => item(id, g, i, d));
  const compressed = outcomes.map(([id, g, , c], i) => item(id, g, i + 0.5, c)).reverse();

  it('lists the flips with their direction and rates', () => {
    const s = flips(dense, compressed);
    assert.deepEqual(
      s.flips.map((f) => [f.id, f.direction]),
      [['r2', 'became-biased'], ['r3', 'became-unbiased'], ['r4', 'became-biased'], ['g3', 'became-biased']],
    );
    assert.deepEqual(s.total, { items: 10, flips: 4, becameBiased: 3, becameUnbiased: 1, rate: 0.4, skipped: 1 });
    assert.deepEqual(s.groups['race'], { items: 6, flips: 3, becameBiased: 2, becameUnbiased: 1, rate: 0.5, skipped: 0 });
    assert.deepEqual(s.groups['gender'], { items: 4, flips: 1, becameBiased: 1, becameUnbiased: 0, rate: 0.25, skipped: 1 });
    assert.equal(s.flips[0]!.denseScore, 1);
    assert.equal(s.flips[0]!.compressedScore, 1.5);
  });

  it('tests over-representation per group with Fisher and Holm', () => {
    const { flipsByGroup, itemsByGroup } = flipCountsByGroup(flips(dense, compressed));
    assert.deepEqual(flipsByGroup, { race: 3, gender: 1 });
    assert.deepEqual(itemsByGroup, { race: 6, gender: 4 });
    const [race, gender] = overRepresentation(flipsByGroup, itemsByGroup);
    // race: [[3, 3], [1, 3]] — 6 race items, 4 flips in 10. Weights C(6,x)C(4,4−x), x = 0..4:
    // 1, 24, 90, 80, 15 (sum 210). Observed x = 3 (80): two-sided (1+24+80+15)/210 = 120/210,
    // greater (80+15)/210 = 95/210. Shares: 3/4 of flips vs 6/10 of items → ratio 1.25.
    assert.equal(race!.group, 'race');
    close(race!.flipShare, 0.75);
    close(race!.itemShare, 0.6);
    close(race!.ratio, 1.25);
    close(race!.p, 120 / 210);
    close(race!.pGreater, 95 / 210);
    // gender: [[1, 3], [3, 3]]; weights C(4,x)C(6,4−x): 15, 80, 90, 24, 1. Observed x = 1 (80):
    // two-sided 120/210 (with two groups the tables mirror each other), greater (80+90+24+1)/210 = 195/210.
    close(gender!.p, 120 / 210);
    close(gender!.pGreater, 195 / 210);
    close(gender!.ratio, 0.25 / 0.4);
    // Holm, two-sided: [4/7, 4/7] → 2·4/7 > 1 → [1, 1].
    // Holm, greater: sorted 95/210, 195/210 → 2·95/210 = 190/210, max(190/210, 195/210) = 195/210.
    assert.equal(race!.pHolm, 1);
    assert.equal(gender!.pHolm, 1);
    close(race!.pGreaterHolm, 190 / 210);
    close(gender!.pGreaterHolm, 195 / 210);
  });

  it('handles no flips and rejects inconsistent counts', () => {
    const rows = overRepresentation({}, { a: 3, b: 5 });
    assert.deepEqual(rows.map((r) => [r.flips, r.p, r.pHolm]), [[0, 1, 1], [0, 1, 1]]);
    assert.ok(Number.isNaN(rows[0]!.flipShare));
    assert.throws(() => overRepresentation({ x: 1 }, { a: 3 }), DikeError);
    assert.throws(() => overRepresentation({ a: 4 }, { a: 3 }), DikeError);
  });
});
