/** Known-answer tests for the seeded bootstrap, quantiles and the RNG. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { bootstrapCI, meanCI, quantile } from '../src/measure/stats/bootstrap.js';
import { Rng } from '../src/util/rng.js';

describe('quantile (numpy "linear")', () => {
  it('interpolates between order statistics', () => {
    // numpy.quantile([1, 2, 3, 4], q): h = 3q → 0.025 → 1.075, 0.5 → 2.5, 0.975 → 3.925
    assert.equal(quantile([1, 2, 3, 4], 0.5), 2.5);
    assert.ok(Math.abs(quantile([1, 2, 3, 4], 0.025) - 1.075) < 1e-12);
    assert.ok(Math.abs(quantile([1, 2, 3, 4], 0.975) - 3.925) < 1e-12);
    assert.equal(quantile([7], 0.3), 7);
  });
});

describe('Rng', () => {
  it('is reproducible from its seed and differs across seeds', () => {
    const a = Array.from({ length: 5 }, ((r) => () => r.nextU32())(new Rng(42)));
    const b = Array.from({ length: 5 }, ((r) => () => r.nextU32())(new Rng(42)));
    const c = Array.from({ length: 5 }, ((r) => () => r.nextU32())(new Rng(43)));
    assert.deepEqual(a, b);
    assert.notDeepEqual(a, c);
  });

  it('draws integers uniformly (chi-square over 10 bins, 100k draws)', () => {
    const r = new Rng(7);
    const counts = new Array<number>(10).fill(0);
    for (let i = 0; i < 100_000; i++) counts[r.int(10)]!++;
    const chi2 = counts.reduce((s, c) => s + (c - 10_000) ** 2 / 10_000, 0);
    assert.ok(chi2 < 27.88, `chi2 = ${chi2}`); // 99.9th percentile of chi-square with 9 d.f.
  });
});

describe('bootstrap', () => {
  it('gives a zero-width interval for constant data', () => {
    const r = meanCI([3, 3, 3, 3], { seed: 1, resamples: 1000 });
    assert.deepEqual([r.score, ...r.ci95, r.n], [3, 3, 3, 4]);
  });

  it('is reproducible with a seed', () => {
    const xs = [0, 1, 1, 0, 1, 1, 1, 0, 0, 1];
    assert.deepEqual(meanCI(xs, { seed: 5, resamples: 1000 }), meanCI(xs, { seed: 5, resamples: 1000 }));
  });

  it('matches the normal-theory width for a large binary sample', () => {
    // 400 items, p = 0.5: the bootstrap distribution of the mean has sd √(p(1−p)/n) = 0.025, so the
    // 95% interval is about 0.5 ± 1.96·0.025 = [0.451, 0.549].
    const xs = Array.from({ length: 400 }, (_, i) => i % 2);
    const r = meanCI(xs, { seed: 11, resamples: 4000 });
    assert.equal(r.score, 0.5);
    assert.ok(Math.abs(r.ci95[0] - 0.451) < 0.01, String(r.ci95));
    assert.ok(Math.abs(r.ci95[1] - 0.549) < 0.01, String(r.ci95));
  });

  it('scales, and drops undefined resamples', () => {
    const r = meanCI([0, 1], { seed: 3, resamples: 1000, scale: 100 });
    assert.equal(r.score, 50);
    assert.ok(r.ci95[0] >= 0 && r.ci95[1] <= 100);
    // A ratio statistic that is undefined when the resample has no positive item.
    const ratio = bootstrapCI(3, (idx) => { const n = [...idx].filter((i) => i === 0).length; return n === 0 ? NaN : 1; }, { seed: 2, resamples: 1000 });
    assert.deepEqual(ratio.ci95, [1, 1]);
  });
});
