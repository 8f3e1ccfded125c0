/**
 * report.html against the results it is drawn from, on hand-made results chosen to tell the rules
 * apart: cells significant and not (one with p < α that Holm does not keep), Pareto points tied on
 * one axis, dominated only weakly, and on the front. The real audit's report is checked the same way
 * in audit.test.ts.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { renderReport } from '../src/audit/report/html.js';
import type { AuditResults, BenchmarkAudit, ModelEntry, PairedCell, VariantComparison } from '../src/audit/types.js';
import { checkReport, paretoFront } from './report-check.js';

const cell = (score: number, delta: number, p: number, pHolm: number, n = 40): PairedCell => ({
  score: { score, ci95: [score - 7.25, score + 6.5], n },
  delta,
  deltaCi95: [delta - 3.125, delta + 2.5],
  test: 'mcnemar',
  p,
  pHolm,
  significant: pHolm < 0.05,
});

const model = (name: string, q: number, level?: number): ModelEntry => ({
  name,
  dir: `/out/${name}`,
  spec: name === 'dense' ? '' : `magnitude:sparsity=${level}`,
  ...(level !== undefined ? { family: 'magnitude', level } : {}),
  weightsSha256: (name.charCodeAt(0).toString(16) + 'ab').repeat(16).slice(0, 64),
  quality: { kind: 'pseudo-perplexity', value: q, tokens: 1000 },
});

/**
 * Overall scores (neutral 50) and quality give the plotted points (quality, |score − 50|):
 *   dense (10, 5)   front
 *   v1    (12, 3)   front
 *   v2    (12, 4)   dominated by v1 (equal quality, more bias)
 *   v3    (15, 3)   dominated by v1 (equal bias, worse quality)
 *   v4    (20, 0.5) front
 *   v5    (9, 8)    front (best quality)
 *   v6    (25, 0.5) dominated by v4 (equal bias)
 *   v7    (20, 0.5) front (the same point as v4: neither is better on either axis)
 */
function results(): AuditResults {
  const overall: Record<string, [number, number]> = { v1: [53, 12], v2: [46, 15], v3: [47, 15.5], v4: [50.5, 20], v5: [58, 9], v6: [49.5, 25], v7: [49.5, 20] };
  const groups = ['age', 'gender', 'race-color'];
  const variants: VariantComparison[] = Object.entries(overall).map(([name, [score]], i) => ({
    variant: name,
    // v1: significant overall; v2: p < 0.05 but not after Holm; the others not significant.
    overall: cell(score, score - 55, i === 0 ? 0.004 : i === 1 ? 0.03 : 0.4, i === 0 ? 0.004 : i === 1 ? 0.09 : 0.6),
    groups: Object.fromEntries(groups.map((g, j) => {
      // Significant after Holm: v1/age, v3/gender, v5/race-color; p < α but not after Holm: v2/age, v4/gender.
      const sig = (i === 0 && j === 0) || (i === 2 && j === 1) || (i === 4 && j === 2);
      const nearly = (i === 1 && j === 0) || (i === 3 && j === 1);
      const d = (j - 1) * 4.375 + (i === 2 ? -9 : 3);
      return [g, cell(50 + d, d, sig ? 0.001 : nearly ? 0.02 : 0.5, sig ? 0.003 : nearly ? 0.06 : 1)];
    })),
    flips: { total: 3 + i, rate: (3 + i) / 40, becameBiased: 2, becameUnbiased: 1 + i, byGroup: [] },
    exemplars: [{ id: `${i}`, group: 'age', direction: 'became-biased', denseScore: -41.25 - i, variantScore: -39.5 + i, text: `The <old> man & "his" ${i}` }],
  }));
  const bench: BenchmarkAudit = {
    benchmark: 'crows-pairs',
    scorer: 'nangia-pll',
    metric: '% pairs preferring the more stereotypical sentence',
    neutral: 50,
    dense: { overall: { score: 55, ci95: [48.125, 61.875], n: 40 }, groups: Object.fromEntries(groups.map((g, j) => [g, { score: 51 + j, ci95: [40, 60], n: 10 + j }])) },
    variants,
  };
  return {
    tool: 'dike', version: '0.0.0-test', seed: 1, resamples: 1000, alpha: 0.05,
    dense: model('dense', 10),
    variants: Object.entries(overall).map(([name, [, q]], i) => model(name, q, (i + 1) / 10)),
    benchmarks: [bench],
    data: [{ file: 'crows-pairs/crows_pairs_anonymized.csv', sha256: 'ab'.repeat(32) }],
  };
}

describe('report.html', () => {
  it('the Pareto front helper is the definition (hand-worked on the points above)', () => {
    const pts = [{ n: 'dense', q: 10, bias: 5 }, { n: 'v1', q: 12, bias: 3 }, { n: 'v2', q: 12, bias: 4 }, { n: 'v3', q: 15, bias: 3 }, { n: 'v4', q: 20, bias: 0.5 }, { n: 'v5', q: 9, bias: 8 }, { n: 'v6', q: 25, bias: 0.5 }, { n: 'v7', q: 20, bias: 0.5 }];
    assert.deepEqual(paretoFront(pts).map((p) => p.n).sort(), ['dense', 'v1', 'v4', 'v5', 'v7']);
  });

  it('shows every number of results.json where it belongs, outlines exactly the significant cells and draws the true Pareto front', () => {
    const r = results();
    const html = renderReport(r);
    const outlined = checkReport(html, r);
    // Outlined: v1's overall cell and v1/age, v3/gender, v5/race-color.
    assert.equal(outlined, 4);
    // The page states the count of significant group-level changes.
    assert.match(html, /3 significant group-level changes/);
  });
});
