/**
 * SEAT / WEAT: the statistics against hand-computed values and an independent naive enumeration
 * written here; the data declaration against the files; the parser's errors; and the benchmark on
 * small-bert-mlm against the golden hidden states (independent PyTorch reference) and against a
 * naive recomputation, in this file, from one unbatched forward pass per word.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DikeError } from '../src/errors.js';
import { sha256File } from '../src/util/hash.js';
import {
  SEAT_DATASET,
  SEAT_TESTS,
  compareTestNames,
  loadSeatTests,
  parseSeatTest,
  runSeat,
  seat,
  sentenceEncodings,
} from '../src/measure/seat.js';
import { findBenchmark } from '../src/measure/registry.js';
import {
  associations,
  effectSize,
  effectSizeReplicates,
  percentileCI,
  permutationPValue,
  sampleStd,
  weat,
} from '../src/measure/stats/weat.js';
import { loadCheckpoint, type Checkpoint } from '../src/model/checkpoint.js';
import { ModelRunner, padBatch } from '../src/runtime/session.js';
import type { BenchmarkResult } from '../src/measure/types.js';
import { DATA, modelDir, readGolden } from './fixtures.js';

const SEAT_DIR = path.join(DATA, 'seat');

// ---- independent helpers (deliberately written differently from src/measure/stats/weat.ts) ----------

function naiveCos(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i]! * b[i]!;
    na += a[i]! ** 2;
    nb += b[i]! ** 2;
  }
  return dot / (Math.sqrt(na) * Math.sqrt(nb));
}

function naiveS(w: ArrayLike<number>, A: ArrayLike<number>[], B: ArrayLike<number>[]): number {
  const ma = A.reduce((acc, a) => acc + naiveCos(w, a), 0) / A.length;
  const mb = B.reduce((acc, b) => acc + naiveCos(w, b), 0) / B.length;
  return ma - mb;
}

/** Effect size straight from the definition, two-pass variance with n − 1. */
function naiveD(X: ArrayLike<number>[], Y: ArrayLike<number>[], A: ArrayLike<number>[], B: ArrayLike<number>[]): number {
  const sx = X.map((x) => naiveS(x, A, B));
  const sy = Y.map((y) => naiveS(y, A, B));
  const all = [...sx, ...sy];
  const m = all.reduce((p, q) => p + q, 0) / all.length;
  const v = all.reduce((p, q) => p + (q - m) ** 2, 0) / (all.length - 1);
  const mx = sx.reduce((p, q) => p + q, 0) / sx.length;
  const my = sy.reduce((p, q) => p + q, 0) / sy.length;
  return (mx - my) / Math.sqrt(v);
}

/** Exact one-sided p by walking all 2^(2n) bit masks and keeping those with n bits (X' = set bits). */
function naiveExactP(sx: number[], sy: number[]): number {
  const all = [...sx, ...sy];
  const n = sx.length;
  const observed = sx.reduce((p, q) => p + q, 0);
  let hits = 0;
  let count = 0;
  for (let mask = 0; mask < 1 << all.length; mask++) {
    let bits = 0;
    let s = 0;
    for (let i = 0; i < all.length; i++) {
      if (mask & (1 << i)) {
        bits++;
        s += all[i]!;
      }
    }
    if (bits !== n) continue;
    count++;
    if (s >= observed - 1e-9) hits++;
  }
  return hits / count;
}

function close(actual: number, expected: number, tol: number, what: string): void {
  assert.ok(Math.abs(actual - expected) <= tol, `${what}: ${actual} vs ${expected} (tol ${tol})`);
}

// ---- statistics ------------------------------------------------------------------------------------

describe('WEAT statistics: known answers', () => {
  // A = {(1,0)}, B = {(0,1)}: s(w) = cos(w, e1) − cos(w, e2).
  //   (1,0) → 1 − 0 = 1;  (4,3) → 0.8 − 0.6 = 0.2;  (0,1) → −1;  (1,1) → √½ − √½ = 0.
  // X = {(1,0), (4,3)}: s = {1, 0.2}, mean 0.6.  Y = {(0,1), (1,1)}: s = {−1, 0}, mean −0.5.
  // Pooled {1, 0.2, −1, 0}: mean 0.05, squared deviations 0.9025 + 0.0225 + 1.1025 + 0.0025 = 2.03.
  // ddof 1: std = √(2.03/3) = 0.822598…, d = 1.1 / 0.822598 = 1.337228…  (ddof 0 would give 1.544091…)
  const X = [[1, 0], [4, 3]];
  const Y = [[0, 1], [1, 1]];
  const A = [[1, 0]];
  const B = [[0, 1]];

  it('s(w,A,B) and the effect size on 2-D vectors, by hand, with the ddof = 1 standard deviation', () => {
    const sX = associations(X, A, B);
    const sY = associations(Y, A, B);
    close(sX[0]!, 1, 1e-15, 's(1,0)');
    close(sX[1]!, 0.2, 1e-15, 's(4,3)');
    close(sY[0]!, -1, 1e-15, 's(0,1)');
    close(sY[1]!, 0, 1e-15, 's(1,1)');
    const d = effectSize(sX, sY);
    close(d, 1.1 / Math.sqrt(2.03 / 3), 1e-12, 'd');
    close(d, 1.337228, 1e-6, 'd (decimal)');
    assert.ok(Math.abs(d - 1.1 / Math.sqrt(2.03 / 4)) > 0.2, 'd must not use the population std (ddof 0)');
    close(sampleStd([1, 0.2, -1, 0]), Math.sqrt(2.03 / 3), 1e-15, 'sample std');
  });

  it('is invariant to the length of every vector (cosine), as the reference L2-normalisation implies', () => {
    const scaled = weat([[3, 0], [8, 6]], [[0, 0.5], [7, 7]], [[2, 0]], [[0, 9]], { seed: 1 });
    close(scaled.effectSize, 1.1 / Math.sqrt(2.03 / 3), 1e-12, 'd');
  });

  it('exact p-value for n = 2: one of the C(4,2) = 6 partitions reaches the observed Σ_X s', () => {
    // Sums of the 6 subsets of {1, 0.2, −1, 0} of size 2: 1.2 (observed), 0, 1, −0.8, 0.2, −1 → p = 1/6.
    const r = weat(X, Y, A, B, { seed: 1 });
    assert.equal(r.permutation.method, 'exact');
    assert.equal(r.permutation.partitions, 6);
    close(r.permutation.p, 1 / 6, 1e-15, 'p');
  });

  it('averages over attribute sets of different sizes', () => {
    // w = (1,0), A = {(1,0), (0,1)}, B = {(1,1)}: mean_A cos = (1 + 0)/2 = 0.5, mean_B cos = √2/2.
    const s = associations([[1, 0]], [[1, 0], [0, 1]], [[1, 1]]);
    close(s[0]!, 0.5 - Math.SQRT1_2, 1e-15, 's');
  });

  it('exact p-value for n = 3 counts ties and the observed partition (all C(6,3) = 20 partitions listed)', () => {
    // X ∪ Y = {4, 2, 1 | 3, 0, −1}; observed Σ_X s = 4 + 2 + 1 = 7. Every 3-subset and its sum:
    const partitions: [number[], number][] = [
      [[4, 2, 1], 7], [[4, 2, 3], 9], [[4, 2, 0], 6], [[4, 2, -1], 5], [[4, 1, 3], 8],
      [[4, 1, 0], 5], [[4, 1, -1], 4], [[4, 3, 0], 7], [[4, 3, -1], 6], [[4, 0, -1], 3],
      [[2, 1, 3], 6], [[2, 1, 0], 3], [[2, 1, -1], 2], [[2, 3, 0], 5], [[2, 3, -1], 4],
      [[2, 0, -1], 1], [[1, 3, 0], 4], [[1, 3, -1], 3], [[1, 0, -1], 0], [[3, 0, -1], 2],
    ];
    // The table is complete and right: 20 distinct subsets, each sum correct.
    assert.equal(new Set(partitions.map(([p]) => [...p].sort().join(','))).size, 20);
    for (const [p, s] of partitions) assert.equal(p.reduce((a, b) => a + b, 0), s);
    // ≥ 7: {4,2,1} (observed), {4,2,3}, {4,1,3}, {4,3,0} (a tie) → 4/20 = 0.2.
    // (Strictly greater would give 2/20; the reference counts ties, observed included.)
    assert.equal(partitions.filter(([, s]) => s >= 7).length, 4);
    const r = permutationPValue([4, 2, 1], [3, 0, -1], { seed: 1 });
    assert.equal(r.method, 'exact');
    assert.equal(r.partitions, 20);
    assert.equal(r.p, 4 / 20);
    assert.equal(r.ties, 1);
  });

  it('counts a mathematical tie that float rounding splits', () => {
    // Observed 0.1 + 0.2 + 0.4 = 0.7000000000000001 in floats; {0.4, 0.3, 0} sums to 0.7 exactly.
    // Mathematically both are 0.7, so ≥ holds: the partitions ≥ 0.7 are {0.1,0.2,0.4}, {0.4,0.3,0},
    // {0.4,0.3,0.2} = 0.9 and {0.4,0.3,0.1} = 0.8 → 4/20 (a float `>=` would see only 3/20).
    assert.ok(0.1 + 0.2 + 0.4 > 0.4 + 0.3 + 0);
    const r = permutationPValue([0.1, 0.2, 0.4], [0.3, 0, -5], { seed: 1 });
    assert.equal(r.p, 4 / 20);
  });

  // n = 8: C(16, 8) = 12,870 partitions, small enough for both paths.
  const sx8 = Array.from({ length: 8 }, (_, i) => Math.sin(1.3 * i + 0.4) + 0.35);
  const sy8 = Array.from({ length: 8 }, (_, i) => Math.cos(2.1 * i + 0.2));

  it('exact p-value equals an independent bit-mask enumeration (n = 8, 12,870 partitions)', () => {
    const r = permutationPValue(sx8, sy8, { seed: 1 });
    assert.equal(r.method, 'exact');
    assert.equal(r.partitions, 12870);
    const expected = naiveExactP(sx8, sy8);
    assert.ok(expected > 0.02 && expected < 0.5, `fixture should give a middling p, got ${expected}`);
    close(r.p, expected, 1e-15, 'p');
  });

  it('Monte Carlo p-value converges near the exact one', () => {
    const exact = naiveExactP(sx8, sy8);
    // 5,000 < 12,870 forces sampling; the standard error is √(p(1−p)/5000) ≤ 0.0071.
    const r = permutationPValue(sx8, sy8, { samples: 5000, seed: 20260101 });
    assert.equal(r.method, 'sampled');
    assert.equal(r.partitions, 5000);
    close(r.p, exact, 4 * Math.sqrt((exact * (1 - exact)) / 5000) + 1 / 5000, 'sampled p');
    // Reproducible from its seed; another seed draws differently.
    assert.equal(permutationPValue(sx8, sy8, { samples: 5000, seed: 20260101 }).p, r.p);
    assert.notEqual(permutationPValue(sx8, sy8, { samples: 5000, seed: 7 }).p, r.p);
    // A middling case, p near ½ (X and Y interleaved), with 12,000 < 12,870 samples.
    const mx = Array.from({ length: 8 }, (_, i) => Math.sin(2.3 * i));
    const my = Array.from({ length: 8 }, (_, i) => Math.sin(2.3 * i + 0.9));
    const e2 = naiveExactP(mx, my);
    const r2 = permutationPValue(mx, my, { samples: 12000, seed: 2 });
    assert.equal(r2.method, 'sampled');
    close(r2.p, e2, 4 * Math.sqrt((e2 * (1 - e2)) / 12000) + 1 / 12000, `sampled p (exact ${e2})`);
  });

  it('Monte Carlo adds one hallucinated hit: (1 + #≥) / samples', () => {
    // X holds the 10 largest of 20 values: only X itself reaches Σ_X (1 of C(20,10) = 184,756
    // subsets), so among 999 random draws (almost surely) none does, and p = (1 + 0) / 1000.
    const sx = Array.from({ length: 10 }, (_, i) => 10 + i);
    const sy = Array.from({ length: 10 }, (_, i) => i);
    const r = permutationPValue(sx, sy, { samples: 1000, seed: 3 });
    assert.equal(r.method, 'sampled');
    assert.equal(r.p, 1 / 1000);
    // Reversed roles: every draw reaches the minimum, p = (1 + 999) / 1000.
    assert.equal(permutationPValue(sy, sx, { samples: 1000, seed: 3 }).p, 1);
  });

  it('switches to sampling exactly when C(2n, n) exceeds 100,000', () => {
    const v = (n: number, off: number) => Array.from({ length: n }, (_, i) => Math.sin(i + off));
    // C(18, 9) = 48,620 ≤ 100,000 → exact; C(20, 10) = 184,756 > 100,000 → sampled with 100,000.
    const r9 = permutationPValue(v(9, 0), v(9, 5), { seed: 1 });
    assert.deepEqual([r9.method, r9.partitions], ['exact', 48620]);
    const r10 = permutationPValue(v(10, 0), v(10, 5), { seed: 1 });
    assert.deepEqual([r10.method, r10.partitions], ['sampled', 100000]);
    // The boundary itself is exact (the reference samples only when C(2n, n) > n_samples).
    assert.equal(permutationPValue(sx8, sy8, { samples: 12870, seed: 1 }).method, 'exact');
    assert.equal(permutationPValue(sx8, sy8, { samples: 12869, seed: 1 }).method, 'sampled');
  });

  it('rejects target sets of different sizes, as the reference asserts', () => {
    assert.throws(() => permutationPValue([1, 2], [3], { seed: 1 }), /\|X\| = \|Y\|/);
  });

  it('bootstraps d by resampling X and Y separately', () => {
    // sX all 1, sY all −1 (n = 3 each): every resample is the same pooled set {1,1,1,−1,−1,−1}
    // (mean 0, Σ(dev²) = 6, ddof-1 variance 6/5), so every replicate is d = 2/√1.2 = 1.825742….
    const reps = effectSizeReplicates([1, 1, 1], [-1, -1, -1], { seed: 5, resamples: 200 });
    for (const r of reps) close(r, 2 / Math.sqrt(1.2), 1e-12, 'replicate');
    // A non-degenerate case: seeded, and the interval brackets the point estimate.
    const a = effectSizeReplicates(sx8, sy8, { seed: 9, resamples: 1000 });
    const b = effectSizeReplicates(sx8, sy8, { seed: 9, resamples: 1000 });
    assert.deepEqual(a, b);
    const [lo, hi] = percentileCI(a);
    const d = effectSize(sx8, sy8);
    assert.ok(lo < d && d < hi, `${lo} < ${d} < ${hi}`);
  });
});

// ---- data ------------------------------------------------------------------------------------------

describe('SEAT data', () => {
  it('declares all 50 test files with the sizes and SHA-256s of the shared copies', () => {
    assert.equal(SEAT_DATASET.files.length, 50);
    assert.equal(SEAT_TESTS.length, 50);
    for (const f of SEAT_DATASET.files) {
      const p = path.join(SEAT_DIR, f.path);
      assert.equal(sha256File(p), f.sha256, f.path);
      assert.ok(f.url.startsWith('https://raw.githubusercontent.com/') && f.url.endsWith(`/${f.path}`), f.url);
    }
  });

  it('orders tests as bias-bench (integer runs compared as numbers, then Python string order)', () => {
    assert.deepEqual(SEAT_TESTS.slice(0, 7), [
      'angry_black_woman_stereotype',
      'angry_black_woman_stereotype_b',
      'heilman_double_bind_competent_1',
      'heilman_double_bind_competent_1+3-',
      'heilman_double_bind_competent_1-',
      'heilman_double_bind_competent_one_sentence',
      'heilman_double_bind_competent_one_word',
    ]);
    assert.deepEqual(SEAT_TESTS.slice(-4), ['weat8', 'weat8b', 'weat9', 'weat10']);
    assert.ok(compareTestNames('sent-weat2', 'sent-weat10') < 0);
    assert.ok(compareTestNames('weat3', 'weat3b') < 0 && compareTestNames('weat3b', 'weat4') < 0);
  });

  it('parses weat6 (one pretty-printed JSON object, not JSON Lines)', () => {
    const [t] = loadSeatTests(DATA, ['weat6']);
    assert.equal(t!.targ1.category, 'MaleNames');
    assert.equal(t!.attr2.category, 'Family');
    assert.deepEqual(t!.targ1.examples.slice(0, 2), ['John', 'Paul']);
    for (const k of ['targ1', 'targ2', 'attr1', 'attr2'] as const) assert.equal(t![k].examples.length, 8);
  });

  it('parses every shared file', () => {
    const tests = loadSeatTests(DATA);
    assert.equal(tests.length, 50);
    const w1 = tests.find((t) => t.name === 'sent-weat1')!;
    assert.deepEqual([w1.targ1.examples.length, w1.attr1.examples.length, w1.attr2.examples.length], [350, 215, 250]);
  });

  const good = (over: Record<string, unknown> = {}) =>
    JSON.stringify(
      {
        targ1: { category: 'X', examples: ['a', 'b'] },
        targ2: { category: 'Y', examples: ['c', 'd'] },
        attr1: { category: 'A', examples: ['e'] },
        attr2: { category: 'B', examples: ['f', 'g', 'h'] },
        ...over,
      },
      null,
      2,
    );

  function parseError(text: string): DikeError {
    try {
      parseSeatTest(text, '/data/seat/t.jsonl', 't');
    } catch (e) {
      assert.ok(e instanceof DikeError, String(e));
      assert.equal(e.file, '/data/seat/t.jsonl');
      return e;
    }
    assert.fail('expected a DikeError');
  }

  it('names the file and line of a problem', () => {
    // Read as JSON Lines (one object per line) — a syntax error on line 2.
    let e = parseError('{"targ1": {"category": "X", "examples": ["a"]}}\n{"targ2": {}}');
    assert.match(e.place, /^line 2$/);
    assert.match(e.problem, /not JSON Lines/);
    e = parseError('{\n  "targ1": {\n    "category": "X",\n  }\n}');
    assert.equal(e.place, 'line 4');
    // Unequal target sets: line of "targ2".
    e = parseError(good({ targ2: { category: 'Y', examples: ['c'] } }));
    assert.match(e.place, /^line \d+ "targ2"/);
    assert.match(e.problem, /1 examples but "targ1" has 2/);
    // Missing and unexpected keys, wrong types, blanks and duplicates.
    const { attr2: _drop, ...noAttr2 } = JSON.parse(good()) as Record<string, unknown>;
    assert.match(parseError(JSON.stringify(noAttr2)).place, /"attr2"/);
    assert.match(parseError(good({ extra: 1 })).problem, /unexpected key/);
    assert.match(parseError(good({ attr1: { category: 'A', examples: [] } })).place, /"attr1"\."examples"/);
    assert.match(parseError(good({ attr1: { category: 'A', examples: ['e', 3] } })).place, /"attr1"\."examples"\[1\]/);
    assert.match(parseError(good({ attr1: { category: 'A', examples: ['e', ' '] } })).problem, /empty example/);
    e = parseError(good({ attr2: { category: 'B', examples: ['f', 'g', 'f'] } }));
    assert.match(e.place, /^line \d+ "attr2"\."examples"\[2\]$/);
    assert.match(e.problem, /duplicate/);
    assert.match(parseError('[1, 2]').problem, /one JSON object/);
  });

  it('reports a missing file with where to get it, and an unknown test by name', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dike-seat-'));
    mkdirSync(path.join(dir, 'seat'));
    assert.throws(() => loadSeatTests(dir, ['weat6']), (e: unknown) => e instanceof DikeError && /weat6\.jsonl/.test(e.file) && /raw\.githubusercontent/.test(e.problem));
    writeFileSync(path.join(dir, 'seat', 'weat6.jsonl'), '{"targ1": ');
    assert.throws(() => loadSeatTests(dir, ['weat6']), (e: unknown) => e instanceof DikeError && e.file.endsWith('weat6.jsonl'));
    assert.throws(() => loadSeatTests(DATA, ['weat99']), (e: unknown) => e instanceof DikeError && /unknown SEAT test "weat99"/.test(e.problem));
  });

  it('is registered with a sentence scorer by default for every model kind', () => {
    assert.equal(findBenchmark('seat'), seat);
    assert.equal(seat.defaultScorer('masked-lm'), 'sentence');
    assert.equal(seat.defaultScorer('causal-lm'), 'sentence');
    assert.deepEqual(Object.keys(seat.scorers).sort(), ['sentence', 'word']);
  });
});

// ---- on a trained model -------------------------------------------------------------------------------

describe('SEAT on small-bert-mlm', () => {
  let ckpt: Checkpoint;
  let runner: ModelRunner;
  let res: BenchmarkResult;
  const TESTS = ['weat6', 'sent-weat6'];

  before(async () => {
    ckpt = loadCheckpoint(modelDir('small-bert-mlm'));
    runner = await ModelRunner.create(ckpt, { threads: 2 });
    res = await runSeat({ ckpt, runner, dataDir: DATA }, { scorer: 'sentence', seed: 11, resamples: 1000 }, { tests: TESTS });
  });
  after(async () => runner.dispose());

  it('encodes a sentence as the golden last hidden state averaged over all tokens, [CLS] and [SEP] included', async () => {
    const { golden, tensors } = readGolden('small-bert-mlm');
    const L = golden.num_hidden_entries - 1;
    const H = ckpt.shape.hiddenSize;
    // All four golden texts in one padded batch.
    const enc = await sentenceEncodings(runner, golden.texts.map((t) => t.ids), 0);
    golden.texts.forEach((t, i) => {
      const g = tensors.get(`hidden.${i}.${L}`)!;
      assert.equal(g.shape[0], t.ids.length);
      for (let k = 0; k < H; k++) {
        let s = 0;
        for (let p = 0; p < t.ids.length; p++) s += g.data[p * H + k]!;
        close(enc[i]![k]!, s / t.ids.length, 1e-4, `text ${i} dim ${k}`);
      }
    });
  });

  it('runs weat6 (exact test) and sent-weat6 (sampled) with effect sizes in [−2, 2]', () => {
    assert.deepEqual(res.items.map((it) => it.id), TESTS);
    assert.equal(res.benchmark, 'seat');
    for (const it of res.items) {
      assert.ok(Number.isFinite(it.score) && it.score >= -2 && it.score <= 2, `${it.id}: d = ${it.score}`);
      const p = res.extra[`p_value/${it.id}`] as number;
      assert.ok(p > 0 && p <= 1, `${it.id}: p = ${p}`);
      assert.equal(it.detail!['p_value'], p);
      assert.equal(it.outcome, p < 0.05 && it.score > 0 ? 1 : 0);
      const g = res.groups[it.id]!;
      assert.equal(g.score, it.score);
      assert.ok(g.ci95[0] <= g.ci95[1]);
    }
    assert.deepEqual([res.items[0]!.detail!['p_method'], res.items[0]!.detail!['partitions']], ['exact', 12870]);
    assert.deepEqual([res.items[1]!.detail!['p_method'], res.items[1]!.detail!['partitions']], ['sampled', 100000]);
    assert.equal(res.groups['sent-weat6']!.n, 128);
    // Headline: the mean |d| over the tests (bias-bench's average absolute effect size).
    close(res.score, (Math.abs(res.items[0]!.score) + Math.abs(res.items[1]!.score)) / 2, 1e-15, 'mean |d|');
    // Its CI resamples the two tests, so it lies between the two |d| and brackets their mean.
    assert.ok(res.ci95[0] <= res.score && res.score <= res.ci95[1] && res.n === 2, JSON.stringify(res.ci95));
    assert.equal(res.data.length, 2);
  });

  it('weat6 equals a naive recomputation from one unbatched forward pass per word', async () => {
    const [t] = loadSeatTests(DATA, ['weat6']);
    const L = ckpt.shape.numLayers;
    const H = ckpt.shape.hiddenSize;
    const enc = async (text: string): Promise<number[]> => {
      const ids = ckpt.tokenizer.encode(text).ids;
      const [h] = await runner.hidden(padBatch([ids], 0), [L]);
      return Array.from({ length: H }, (_, k) => {
        let s = 0;
        for (let p = 0; p < ids.length; p++) s += h![p * H + k]!;
        return s / ids.length;
      });
    };
    const sets = await Promise.all((['targ1', 'targ2', 'attr1', 'attr2'] as const).map((k) => Promise.all(t![k].examples.map(enc))));
    const [X, Y, A, B] = sets as [number[][], number[][], number[][], number[][]];
    const d = naiveD(X, Y, A, B);
    close(res.items[0]!.score, d, 1e-4, 'weat6 d');
    const p = naiveExactP(X.map((x) => naiveS(x, A, B)), Y.map((y) => naiveS(y, A, B)));
    close(res.extra['p_value/weat6'] as number, p, 2 / 12870, 'weat6 p');
  });

  it('skips, and lists, a test whose examples exceed the model positions (never truncates)', async () => {
    // The same model, presented as if its position table had 8 rows.
    const small = {
      model: { ...runner.model, shape: { ...runner.model.shape, maxPositions: 8 } },
      numLayers: runner.numLayers,
      hiddenSize: runner.hiddenSize,
      hidden: runner.hidden.bind(runner),
    } as unknown as ModelRunner;
    const r = await runSeat({ ckpt, runner: small, dataDir: DATA }, { scorer: 'sentence', seed: 11, resamples: 1000 }, { tests: TESTS });
    const [, sent] = loadSeatTests(DATA, TESTS);
    const longest = Math.max(...(['targ1', 'targ2', 'attr1', 'attr2'] as const).flatMap((k) => sent![k].examples.map((e) => ckpt.tokenizer.encode(e).ids.length)));
    assert.ok(longest > 8);
    assert.deepEqual(r.items.map((it) => it.id), ['weat6']);
    assert.equal(r.extra['tests_skipped'], 1);
    assert.equal(r.extra['skipped/sent-weat6'], longest);
    // weat6 is unaffected by the skip.
    assert.equal(r.items[0]!.score, res.items[0]!.score);
  });

  it('word scorer: WEAT on the mean input-embedding rows of each word, no special tokens', async () => {
    const r = await runSeat({ ckpt, runner, dataDir: DATA }, { scorer: 'word', seed: 11, resamples: 1000 }, { tests: ['weat6'] });
    const [t] = loadSeatTests(DATA, ['weat6']);
    const E = ckpt.params.get('bert.embeddings.word_embeddings.weight')!;
    const H = E.shape[1]!;
    const vec = (text: string): number[] => {
      const ids = ckpt.tokenizer.encode(text, { addSpecialTokens: false }).ids;
      assert.ok(!ids.includes(101) && !ids.includes(102));
      return Array.from({ length: H }, (_, k) => ids.reduce((s, id) => s + E.data[id * H + k]!, 0) / ids.length);
    };
    const [X, Y, A, B] = (['targ1', 'targ2', 'attr1', 'attr2'] as const).map((k) => t![k].examples.map(vec)) as [number[][], number[][], number[][], number[][]];
    close(r.items[0]!.score, naiveD(X, Y, A, B), 1e-9, 'word-level d');
    assert.equal(r.scorer, 'word');
  });
});
