/**
 * bench/identity-cls.ts (issue 16, the Proskurina et al. 2023 baseline): the generated data and the
 * counterfactual-token-fairness item values, against hand-made cases worked out here.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { itemValues, meanDefinedAt, testItems, trainingRows, TRAIN_TEMPLATES, type CtfItem, type Groups } from '../bench/identity-cls.js';

const G: Groups = {
  pairs: [['x', 'y'], ['z', 'y']],
  negative: ['bad'],
  positive: ['good', 'nice'],
  templates: ['T0 {group} {attr}', 'T1 {group} {attr}', 'T2 {group} {attr}', 'T3 {group} {attr}', 'T4 {group} {attr}', 'T5 {group} {attr}', 'T6 {group} {attr}', 'H7 the {group} was {attr}', 'H8 {group}: {attr}'],
};

describe('identity-cls data', () => {
  it('training rows: train templates × distinct terms × attributes, labelled by polarity; no held-out template', () => {
    const rows = trainingRows(G);
    assert.equal(TRAIN_TEMPLATES, 7);
    assert.equal(rows.length, 7 * 3 * 3); // terms x, y, z (y once) × 3 attributes
    assert.ok(rows.includes('negative\tT0 x bad'));
    assert.ok(rows.includes('positive\tT6 y nice'));
    assert.ok(!rows.some((r) => r.includes('H7') || r.includes('H8')));
    // every term appears equally often with each label: the label carries no identity information
    for (const term of ['x', 'y', 'z']) {
      assert.equal(rows.filter((r) => r.startsWith('negative') && r.split(' ')[1] === term).length, 7);
      assert.equal(rows.filter((r) => r.startsWith('positive') && r.split(' ')[1] === term).length, 14);
    }
  });

  it('test items: held-out templates × attributes × pairs, a the targeted group', () => {
    const items = testItems(G);
    assert.equal(items.length, 2 * 3 * 2);
    assert.deepEqual(items[0], { id: 't7.bad.p0', label: 0, a: 'H7 the x was bad', b: 'H7 the y was bad' });
    assert.deepEqual(items.find((i) => i.id === 't8.nice.p1'), { id: 't8.nice.p1', label: 1, a: 'H8 z: nice', b: 'H8 y: nice' });
  });
});

describe('identity-cls item values', () => {
  const items: CtfItem[] = [
    { id: '0', label: 0, a: '', b: '' },
    { id: '1', label: 1, a: '', b: '' },
    { id: '2', label: 1, a: '', b: '' },
    { id: '3', label: 1, a: '', b: '' },
  ];
  const pa = [0.9, 0.7, 0.2, 0.4];
  const pb = [0.6, 0.3, 0.2, 0.8];
  const v = itemValues(items, pa, pb);

  it('gap, |gap|, accuracy and false-positive gap by hand', () => {
    const close = (a: ArrayLike<number>, b: number[]): void => b.forEach((x, i) => assert.ok(Math.abs(a[i]! - x) < 1e-12, `${i}: ${a[i]} vs ${x}`));
    close(v.gap, [0.3, 0.4, 0, -0.4]);
    close(v.absGap, [0.3, 0.4, 0, 0.4]);
    // item 0 negative: both predicted negative (p > ½) → 1; item 1 positive: a predicted negative, b positive → ½;
    // item 2: both positive → 1; item 3: a positive, b negative → ½
    close(v.correct, [1, 0.5, 1, 0.5]);
    assert.ok(Number.isNaN(v.fpGap[0]!));
    close(v.fpGap.subarray(1), [1, 0, -1]);
  });

  it('FPR gap = FPR_a − FPR_b over positive items (NaN items skipped)', () => {
    // positive items 1..3: a predicted negative on 1 of 3, b on 1 of 3 → 1/3 − 1/3 = 0
    assert.equal(meanDefinedAt(v.fpGap, Int32Array.from([0, 1, 2, 3])), 0);
    assert.equal(meanDefinedAt(v.fpGap, Int32Array.from([0, 1, 1, 2])), 2 / 3);
    assert.ok(Number.isNaN(meanDefinedAt(v.fpGap, Int32Array.from([0, 0]))));
  });
});
