/**
 * CrowS-Pairs: alignment equals CPython's difflib, rounding equals Python's round(x, 3), the CSV is
 * parsed as the reference reads it, and the full benchmark on the trained models reproduces the
 * reference per-pair scores and metrics in ../shared/models (independent PyTorch implementation).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { SequenceMatcher, sharedTemplates } from '../src/measure/difflib.js';
import { crowsPairs, parseCrowsPairs, pyRound3 } from '../src/measure/crows-pairs.js';
import { loadCheckpoint, type Checkpoint } from '../src/model/checkpoint.js';
import { ModelRunner, gatherRows, padBatch } from '../src/runtime/session.js';
import { DikeError } from '../src/errors.js';
import { DATA, logSoftmaxRow, modelDir, repoRoot } from './fixtures.js';
import type { BenchmarkResult } from '../src/measure/types.js';

const CSV = path.join(DATA, 'crows-pairs', 'crows_pairs_anonymized.csv');

describe('difflib alignment', () => {
  it('gives the same opcodes as CPython difflib on 300 seeded cases (incl. autojunk lengths ≥ 200)', () => {
    const fx = JSON.parse(readFileSync(path.join(repoRoot(), 'test', 'fixtures', 'difflib_opcodes.json'), 'utf8')) as {
      cases: { a: number[]; b: number[]; opcodes: [string, number, number, number, number][] }[];
    };
    assert.equal(fx.cases.length, 300);
    for (const c of fx.cases) {
      assert.deepEqual(new SequenceMatcher(c.a.map(String), c.b.map(String)).opcodes(), c.opcodes, JSON.stringify(c.a) + ' / ' + JSON.stringify(c.b));
    }
  });

  it('aligns a minimal pair on its shared tokens', () => {
    // [CLS] the nurse said he was tired [SEP] vs [CLS] the nurse said she was very tired [SEP]
    const { t1, t2 } = sharedTemplates([101, 1, 2, 3, 4, 5, 6, 102], [101, 1, 2, 3, 9, 5, 8, 6, 102]);
    assert.deepEqual(t1, [0, 1, 2, 3, 5, 6, 7]);
    assert.deepEqual(t2, [0, 1, 2, 3, 5, 7, 8]);
  });
});

describe('Python round(x, 3)', () => {
  it('matches CPython on ties, near-ties and negatives', () => {
    // Printed by CPython 3.11: [round(x, 3) for x in xs]
    const xs = [2.675, 0.0005, -3.0625, 1.0005, -17.2345, -45.1234999, 12.3456, -0.0625, 0.1875, -101.4375, 7.9995, -1e-9, 3.0, -48.25341796875];
    const py = [2.675, 0.001, -3.062, 1.0, -17.235, -45.123, 12.346, -0.062, 0.188, -101.438, 8.0, -0.0, 3.0, -48.253];
    xs.forEach((x, i) => assert.equal(pyRound3(x), py[i], `round(${x}, 3)`));
  });
});

describe('CrowS-Pairs CSV', () => {
  const pairs = parseCrowsPairs(readFileSync(CSV, 'utf8'), CSV);

  it('has the 1,508 pairs with the documented direction and bias-type counts', () => {
    assert.equal(pairs.length, 1508);
    assert.deepEqual(pairs.map((p) => p.index), Array.from({ length: 1508 }, (_, i) => i));
    assert.equal(pairs.filter((p) => p.direction === 'stereo').length, 1290);
    const counts: Record<string, number> = {};
    for (const p of pairs) counts[p.biasType] = (counts[p.biasType] ?? 0) + 1;
    assert.deepEqual(counts, {
      'race-color': 516, gender: 262, socioeconomic: 172, nationality: 159, religion: 105, age: 87,
      'sexual-orientation': 84, 'physical-appearance': 63, disability: 60,
    });
  });

  it('keeps the embedded newline of row 1293 and the line numbers after it', () => {
    const p = pairs[1293]!;
    assert.equal(p.sentLess, 'Bob was denied because he was white\n.');
    assert.equal(pairs[1294]!.line, 1297); // header line 1, row i on line i+2, plus one extra physical line
  });

  const dir = mkdtempSync(path.join(tmpdir(), 'dike-crows-'));
  const bad = (name: string, body: string): string => {
    const f = path.join(dir, name);
    writeFileSync(f, ',sent_more,sent_less,stereo_antistereo,bias_type,annotations,anon_writer,anon_annotators\n' + body);
    return f;
  };
  const expectError = (f: string, place: string, problem: RegExp): void => {
    assert.throws(() => parseCrowsPairs(readFileSync(f, 'utf8'), f), (e: unknown) => {
      assert.ok(e instanceof DikeError);
      assert.equal(e.file, f);
      assert.equal(e.place, place);
      assert.match(e.problem, problem);
      return true;
    });
  };

  it('rejects a bad direction with file and line', () => {
    expectError(bad('dir.csv', '0,A b.,C b.,stereo,age,[],a0,[]\n1,A c.,B c.,sterio,age,[],a0,[]\n'), 'line 3', /stereo_antistereo/);
  });
  it('rejects a missing column', () => {
    expectError(bad('cols.csv', '0,A b.,C b.,stereo,age,[],a0\n'), 'line 2', /expected 8 columns/);
  });
  it('rejects an empty sentence and a non-numeric index', () => {
    expectError(bad('empty.csv', '0,,C b.,stereo,age,[],a0,[]\n'), 'line 2', /sent_more is empty/);
    expectError(bad('index.csv', 'x,A,C,stereo,age,[],a0,[]\n'), 'line 2', /index column/);
  });
  it('rejects an unterminated quote', () => {
    expectError(bad('quote.csv', '0,"A b.,C b.,stereo,age,[],a0,[]\n'), 'line 2', /malformed CSV/);
  });
});

interface NangiaRef {
  N: number; neutral: number; metric: number; stereotype_score: number; antistereotype_score: number;
  per_bias_type: Record<string, { N: number; metric: number }>;
  pairs: { index: number; sent_more_score: number; sent_less_score: number; n_scored_tokens: number; outcome: string }[];
}
interface SumLLRef {
  pct_stereotype: number; likelihood_diff_mean: number;
  per_bias_type: Record<string, { N: number; pct_stereotype: number; likelihood_diff_mean: number }>;
  pairs: { index: number; ll_more: number; ll_less: number; n_tokens_more: number; n_tokens_less: number; more_higher: number }[];
}

async function runCrows(model: string, scorer: string, limit?: number): Promise<{ res: BenchmarkResult; ckpt: Checkpoint; runner: ModelRunner }> {
  const ckpt = loadCheckpoint(modelDir(model));
  const runner = await ModelRunner.create(ckpt, { threads: 2 });
  const res = await crowsPairs.run({ ckpt, runner, dataDir: DATA }, { scorer, seed: 1, resamples: 1000, ...(limit ? { limit } : {}) });
  return { res, ckpt, runner };
}

describe('CrowS-Pairs nangia-pll on small-bert-mlm reproduces the reference', () => {
  const ref = JSON.parse(readFileSync(path.join(modelDir('small-bert-mlm'), 'crows_pairs_nangia_pll.json'), 'utf8')) as NangiaRef;
  let res: BenchmarkResult;
  let runner: ModelRunner;
  before(async () => ({ res, runner } = await runCrows('small-bert-mlm', 'nangia-pll')));
  after(async () => runner.dispose());

  it('per pair: scored-token counts exact, sentence scores within 1e-4, outcomes identical', () => {
    // Measured worst |Δ| over the 1,508 pairs × 2 sentences: 1.4e-5 (pair 296, score −156.98: a float32
    // sum of ~20 token log-probs, one ulp of the total is 1.5e-5). 1e-4 is 7× that.
    const TOL = 1e-4;
    assert.equal(res.items.length, ref.pairs.length);
    res.items.forEach((it, i) => {
      const p = ref.pairs[i]!;
      assert.equal(it.id, String(p.index));
      assert.equal(it.detail!['n_scored_tokens'], p.n_scored_tokens, `pair ${p.index}`);
      assert.ok(Math.abs((it.detail!['sent_more_score'] as number) - p.sent_more_score) <= TOL, `pair ${p.index} more`);
      assert.ok(Math.abs((it.detail!['sent_less_score'] as number) - p.sent_less_score) <= TOL, `pair ${p.index} less`);
      assert.equal(it.detail!['outcome'], p.outcome, `pair ${p.index}`);
    });
  });

  it('overall, stereotype, antistereotype and neutral numbers equal the reference', () => {
    assert.equal(res.n, ref.N);
    assert.ok(Math.abs(res.score - ref.metric) < 1e-9, `${res.score} vs ${ref.metric}`);
    assert.ok(res.ci95[0] < res.score && res.score < res.ci95[1]);
    assert.ok(Math.abs((res.extra['stereotype_score'] as { score: number }).score - ref.stereotype_score) < 1e-9);
    assert.ok(Math.abs((res.extra['antistereotype_score'] as { score: number }).score - ref.antistereotype_score) < 1e-9);
    assert.equal(res.extra['neutral'], ref.neutral);
  });

  it('per bias type equals the reference', () => {
    assert.deepEqual(Object.keys(res.groups).sort(), Object.keys(ref.per_bias_type).sort());
    for (const [g, r] of Object.entries(ref.per_bias_type)) {
      assert.equal(res.groups[g]!.n, r.N);
      assert.ok(Math.abs(res.groups[g]!.score - r.metric) < 1e-9, g);
    }
  });
});

describe('CrowS-Pairs sum-ll on small-gpt2 reproduces the reference', () => {
  const ref = JSON.parse(readFileSync(path.join(modelDir('small-gpt2'), 'crows_pairs_sum_ll.json'), 'utf8')) as SumLLRef;
  let res: BenchmarkResult;
  let runner: ModelRunner;
  before(async () => ({ res, runner } = await runCrows('small-gpt2', 'sum-ll')));
  after(async () => runner.dispose());

  it('per pair: token counts exact, log-likelihoods within 2e-4, preferences identical', () => {
    // Measured worst |Δ| over the 1,508 pairs × 2 sentences: 4.4e-5 (pair 785, ll −191.59: float32 ulp
    // there is 1.5e-5, summed over up to ~40 tokens). 2e-4 is 4.6× that.
    const TOL = 2e-4;
    assert.equal(res.items.length, ref.pairs.length);
    res.items.forEach((it, i) => {
      const p = ref.pairs[i]!;
      assert.equal(it.id, String(p.index));
      assert.equal(it.detail!['n_tokens_more'], p.n_tokens_more);
      assert.equal(it.detail!['n_tokens_less'], p.n_tokens_less);
      assert.ok(Math.abs((it.detail!['ll_more'] as number) - p.ll_more) <= TOL, `pair ${p.index}`);
      assert.ok(Math.abs((it.detail!['ll_less'] as number) - p.ll_less) <= TOL, `pair ${p.index}`);
      assert.equal(it.outcome, p.more_higher, `pair ${p.index}`);
    });
  });

  it('pct_stereotype and likelihood_diff, overall and per bias type, equal the reference', () => {
    // likelihood_diff is a mean of per-pair differences whose rounding errors mostly cancel: measured worst
    // 1.3e-6 over the overall and nine per-type means ; 1e-5 is 7.5× that.
    const DIFF_TOL = 1e-5;
    assert.ok(Math.abs(res.score - 100 * ref.pct_stereotype) < 1e-9);
    assert.ok(Math.abs((res.extra['likelihood_diff'] as { score: number }).score - ref.likelihood_diff_mean) < DIFF_TOL);
    for (const [g, r] of Object.entries(ref.per_bias_type)) {
      assert.equal(res.groups[g]!.n, r.N);
      assert.ok(Math.abs(res.groups[g]!.score - 100 * r.pct_stereotype) < 1e-9, g);
      assert.ok(Math.abs((res.extra[`likelihood_diff/${g}`] as { score: number }).score - r.likelihood_diff_mean) < DIFF_TOL, g);
    }
  });
});

describe('CrowS-Pairs diff-mean', () => {
  it('scores the mean log-prob of the differing tokens, each masked alone (independent recomputation)', async () => {
    const { res, ckpt, runner } = await runCrows('small-bert-mlm', 'diff-mean', 6);
    try {
      const pairs = parseCrowsPairs(readFileSync(CSV, 'utf8'), CSV).slice(0, 6);
      const tok = ckpt.tokenizer;
      for (const [k, p] of pairs.entries()) {
        // Independent: differing tokens found as positions outside a longest common subsequence
        // (minimal pairs have a unique LCS here), each masked in its own forward pass.
        const a = tok.encode(p.sentMore.toLowerCase()).ids;
        const b = tok.encode(p.sentLess.toLowerCase()).ids;
        const [inA, inB] = lcsMembers(a, b);
        const meanLp = async (ids: number[], keep: boolean[]): Promise<number> => {
          const lps: number[] = [];
          for (let i = 1; i < ids.length - 1; i++) {
            if (keep[i]) continue;
            const copy = ids.slice();
            copy[i] = tok.special.mask!;
            const [h] = await runner.hidden(padBatch([copy], 0));
            const logits = await runner.logits(gatherRows(h!, copy.length, ckpt.shape.hiddenSize, [[0, i]]), 1);
            lps.push(logSoftmaxRow(logits)[ids[i]!]!);
          }
          return lps.reduce((s, x) => s + x, 0) / lps.length;
        };
        const more = await meanLp(a, inA);
        const less = await meanLp(b, inB);
        const it = res.items[k]!;
        assert.ok(Math.abs((it.detail!['sent_more_score'] as number) - more) < 1e-4, `pair ${k} more`);
        assert.ok(Math.abs((it.detail!['sent_less_score'] as number) - less) < 1e-4, `pair ${k} less`);
        assert.equal(it.outcome, more > less ? 1 : 0);
      }
    } finally {
      await runner.dispose();
    }
  });
});

/** Membership of each position in one longest common subsequence (standard DP, backtracking). */
function lcsMembers(a: number[], b: number[]): [boolean[], boolean[]] {
  const L = Array.from({ length: a.length + 1 }, () => new Array<number>(b.length + 1).fill(0));
  for (let i = a.length - 1; i >= 0; i--) for (let j = b.length - 1; j >= 0; j--) L[i]![j] = a[i] === b[j] ? L[i + 1]![j + 1]! + 1 : Math.max(L[i + 1]![j]!, L[i]![j + 1]!);
  const inA = a.map(() => false);
  const inB = b.map(() => false);
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    if (a[i] === b[j]) {
      inA[i++] = true;
      inB[j++] = true;
    } else if (L[i + 1]![j]! >= L[i]![j + 1]!) i++;
    else j++;
  }
  return [inA, inB];
}

describe('CrowS-Pairs data errors', () => {
  it('names the missing file, where it was looked for, and how to get it', async () => {
    const empty = mkdtempSync(path.join(tmpdir(), 'dike-nodata-'));
    mkdirSync(path.join(empty, 'crows-pairs'));
    const ckpt = loadCheckpoint(modelDir('tiny-bert-mlm'));
    const runner = await ModelRunner.create(ckpt, { threads: 1 });
    await assert.rejects(crowsPairs.run({ ckpt, runner, dataDir: empty }, { scorer: 'nangia-pll', seed: 1, resamples: 1000 }), (e: unknown) => {
      assert.ok(e instanceof DikeError);
      assert.match(e.message, /crows_pairs_anonymized\.csv/);
      assert.match(e.message, /dike data fetch crows-pairs/);
      assert.match(e.message, /raw\.githubusercontent\.com\/nyu-mll\/crows-pairs/);
      return true;
    });
    await runner.dispose();
  });
});
