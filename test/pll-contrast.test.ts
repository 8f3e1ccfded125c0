/**
 * The pseudo-log-likelihood contrast (src/train/contrast.ts; step.ts TrainStepSpec.contrast):
 * L = (1/P) Σ_k softplus(m − s·g_k), g_k CrowS-Pairs' unrounded nangia-pll item score. Its value is
 * checked against the benchmark's own scoring path (measure/crows-pairs.ts run: ordinary masked
 * inference, per-pair sent_more_score − sent_less_score) combined by hand in float64; its gradient
 * against central finite differences of the step graph's own loss; a short run moves the measured
 * scores the way it should; the testbed recipe keys are checked.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DATA, modelDir } from './fixtures.js';
import { crowsPairs, pairObjectives, parseCrowsPairs } from '../src/measure/crows-pairs.js';
import { ModelRunner } from '../src/runtime/session.js';
import { loadCheckpoint, type Checkpoint } from '../src/model/checkpoint.js';
import { TrainSession } from '../src/train/session.js';
import { contrastBatch, contrastSchedule, type ContrastPair } from '../src/train/contrast.js';
import { train, type TrainSettings } from '../src/train/loop.js';
import { buildTestbed, readTestbedRecipe } from '../src/testbed/testbed.js';
import { embeddedModelDir } from '../src/embedded.js';

const N = 4;
const MARGIN = 0.5;
const CSV = path.join(DATA, 'crows-pairs', 'crows_pairs_anonymized.csv');

/** Per pair, sent_more_score − sent_less_score as the benchmark scores it (first `n` pairs of the CSV). */
async function measuredGaps(ckpt: Checkpoint, n: number): Promise<number[]> {
  const runner = await ModelRunner.create(ckpt, { threads: 1 });
  try {
    const res = await crowsPairs.run({ ckpt, runner, dataDir: DATA }, { scorer: 'nangia-pll', seed: 1, resamples: 10, limit: n });
    return res.items.map((i) => (i.detail!['sent_more_score'] as number) - (i.detail!['sent_less_score'] as number));
  } finally {
    await runner.dispose();
  }
}

const softplus = (x: number): number => Math.max(x, 0) + Math.log1p(Math.exp(-Math.abs(x)));

describe('pll-contrast loss (dike-bert-mini, the first 4 CrowS-Pairs pairs)', () => {
  // A trained model: the random tiny-bert-mlm's gradients (‖∇‖ ~ 1e-4) drown in float32 roundoff of the loss.
  const ckpt = loadCheckpoint(embeddedModelDir('dike-bert-mini'));
  const pairs: ContrastPair[] = pairObjectives(ckpt, parseCrowsPairs(readFileSync(CSV, 'utf8'), CSV).slice(0, N), 'nangia-pll');
  const copies = pairs.reduce((a, p) => a + p.terms.length, 0);
  const S = Math.max(...pairs.flatMap((p) => p.terms.map((t) => t.ids.length)));
  // One slot more than the pairs and eight sequences more than the copies: unused slots must add nothing.
  const shape = { margin: MARGIN, pairs: N + 1, rows: copies + 8 };
  let session: TrainSession | undefined;
  after(async () => session?.release());
  const get = async (): Promise<TrainSession> =>
    (session ??= await TrainSession.create(ckpt, { batch: shape.rows, seq: S, rows: 0, optimizer: 'grads', contrast: shape }, 1));
  const all = pairs.map((_, k) => k);

  for (const sign of [1, -1] as const) {
    it(`the loss is (1/P) Σ softplus(m − s·g), s = ${sign}, g from the benchmark's scoring path`, async () => {
      const g = await measuredGaps(ckpt, N);
      assert.equal(g.length, N);
      const expected = g.reduce((a, gk) => a + softplus(MARGIN - sign * gk), 0) / N;
      const { loss } = await (await get()).gradients(contrastBatch(pairs, all, shape, S, sign, 0));
      // float32 log-probs summed over ~30 copies a pair: ~1e-6 relative per pair score.
      assert.ok(Math.abs(loss - expected) <= 1e-4 * expected, `loss ${loss}, expected ${expected}`);
    });
  }

  it('a step of two pairs averages over those two only', async () => {
    const g = await measuredGaps(ckpt, N);
    const expected = (softplus(MARGIN - g[1]!) + softplus(MARGIN - g[3]!)) / 2;
    const { loss } = await (await get()).gradients(contrastBatch(pairs, [3, 1], shape, S, 1, 0));
    assert.ok(Math.abs(loss - expected) <= 1e-4 * expected, `loss ${loss}, expected ${expected}`);
  });

  for (const name of ['bert.encoder.layer.1.intermediate.dense.weight', 'cls.predictions.transform.dense.weight', 'bert.embeddings.word_embeddings.weight']) {
    it(`d loss / d ${name} matches central finite differences along the gradient`, async () => {
      const s = await get();
      const b = contrastBatch(pairs, all, shape, S, 1, 0);
      const { grads } = await s.gradients(b);
      const gr = grads.get(name)!;
      const norm = Math.sqrt(gr.reduce((a, x) => a + x * x, 0));
      assert.ok(norm > 0);
      const p = s.params.get(name)!;
      const base = Float32Array.from(p);
      // d = ∇/‖∇‖: the directional derivative is ‖∇‖. Central differences D(h) = ‖∇‖ + c·h² + roundoff/h,
      // Richardson-extrapolated: (4·D(h/2) − D(h))/3 cancels the h² term. The float32 loss (sums of ~100
      // log-probs) has ~1e-6 roundoff, so h cannot shrink far. Measured relative errors of D(0.02), D(0.01)
      // and the extrapolation: intermediate −3.7e-4, −1.7e-4 → −1.1e-4; transform 1.5e-2, 3.8e-3 → 2.4e-4;
      // word embeddings 2.1e-3, 5.6e-4 → 4e-5. A wrong gradient is off by O(1).
      const lossAt = async (h: number): Promise<number> => {
        for (let i = 0; i < p.length; i++) p[i] = base[i]! + (h * gr[i]!) / norm;
        return (await s.gradients(b)).loss;
      };
      const central = async (h: number): Promise<number> => ((await lossAt(h)) - (await lossAt(-h))) / (2 * h);
      const h = 0.02;
      const fd = (4 * (await central(h / 2)) - (await central(h))) / 3;
      p.set(base);
      assert.ok(Math.abs(fd - norm) <= 1e-3 * norm, `finite differences ${fd}, autodiff ${norm}`);
    });
  }

  it('the schedule packs every pair once an epoch, no step over the copy budget, the same for the same seed', () => {
    const sched = contrastSchedule(pairs, 70, 6, 9);
    assert.deepEqual(sched, contrastSchedule(pairs, 70, 6, 9));
    for (const step of sched) assert.ok(step.reduce((a, k) => a + pairs[k]!.terms.length, 0) <= 70);
    // Steps of epoch 1 hold each pair exactly once (epochs end where the indices start repeating).
    const seen: number[] = [];
    for (const step of sched) {
      if (step.some((k) => seen.includes(k))) break;
      seen.push(...step);
    }
    assert.deepEqual(seen.sort(), all);
  });
});

describe('pll-contrast in a training run', () => {
  const work = mkdtempSync(path.join(tmpdir(), 'dike-pc-'));
  after(() => rmSync(work, { recursive: true, force: true }));
  const text = path.join(work, 'unused.txt');
  writeFileSync(text, 'not read\n');

  for (const sign of [1, -1] as const) {
    it(`12 steps toward ${sign > 0 ? 'sent_more' : 'sent_less'} move the measured item scores of the trained pairs that way`, async () => {
      const ckpt = loadCheckpoint(modelDir('tiny-bert-mlm'));
      const pairs = pairObjectives(ckpt, parseCrowsPairs(readFileSync(CSV, 'utf8'), CSV).slice(0, N), 'nangia-pll');
      const settings: TrainSettings = {
        objective: 'masked-lm', data: [text], seq: 64, batch: 128, steps: 12,
        schedule: { peak: 3e-3, warmup: 0, decay: 'constant', minRatio: 1 },
        adamw: { beta1: 0.9, beta2: 0.98, eps: 1e-6, weightDecay: 0, maxGradNorm: 1 },
        seed: 1, mlmProbability: 0.15, checkpointEvery: 0, freeze: [], keepSparsity: false, dtype: 'F32', threads: 1,
        contrast: { margin: 5, sign, source: 'test' },
      };
      const out = path.join(work, `run${sign}`);
      const before = await measuredGaps(ckpt, N);
      const res = await train(ckpt, settings, out, { tokenizerDir: modelDir('tiny-bert-mlm'), contrastPairs: pairs });
      const afterGaps = await measuredGaps(loadCheckpoint(out), N);
      const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
      assert.ok(sign * (mean(afterGaps) - mean(before)) > 0.5, `mean gap ${mean(before)} → ${mean(afterGaps)}`);
      // The first step's loss is the softplus of the untrained gaps (all 4 pairs fit one step of 128 copies).
      const first = before.reduce((a, g) => a + softplus(5 - sign * g), 0) / N;
      assert.ok(Math.abs(res.losses[0]! - first) <= 1e-4 * first, `first loss ${res.losses[0]}, expected ${first}`);
    });
  }
});

describe('pll-contrast resume', () => {
  const work = mkdtempSync(path.join(tmpdir(), 'dike-pcres-'));
  after(() => rmSync(work, { recursive: true, force: true }));
  it('stopped after 2 of 5 steps and resumed: byte-identical to the uninterrupted run', async () => {
    const text = path.join(work, 'unused.txt');
    writeFileSync(text, 'not read\n');
    const ckpt = loadCheckpoint(modelDir('tiny-bert-mlm'));
    // 12 pairs in steps of at most 64 copies: several steps, each with other pairs.
    const pairs = pairObjectives(ckpt, parseCrowsPairs(readFileSync(CSV, 'utf8'), CSV).slice(0, 12), 'nangia-pll');
    const settings: TrainSettings = {
      objective: 'masked-lm', data: [text], seq: 64, batch: 64, steps: 5,
      schedule: { peak: 1e-3, warmup: 1, decay: 'cosine', minRatio: 0.1 },
      adamw: { beta1: 0.9, beta2: 0.98, eps: 1e-6, weightDecay: 0.01, maxGradNorm: 1 },
      seed: 4, mlmProbability: 0.15, checkpointEvery: 1, freeze: [], keepSparsity: false, dtype: 'F32', threads: 1,
      contrast: { margin: 1, sign: 1, source: 'test' },
    };
    const opts = { tokenizerDir: modelDir('tiny-bert-mlm'), contrastPairs: pairs };
    await train(ckpt, settings, path.join(work, 'whole'), opts);
    const first = await train(ckpt, settings, path.join(work, 'parts'), { ...opts, stopAfter: 2 });
    assert.equal(first.steps, 2);
    const second = await train(ckpt, settings, path.join(work, 'parts'), opts);
    assert.equal(second.resumedFrom, 2);
    const bytes = (d: string): Buffer => readFileSync(path.join(work, d, 'model.safetensors'));
    assert.ok(bytes('whole').equals(bytes('parts')));
  });
});

describe('pll-contrast testbed recipe keys', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'dike-pcr-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const stage = { steps: 1, seq: 40, batch: 64, lr: 1e-4, warmup: 0 };
  const write = (name: string, skew: Record<string, unknown>, base = 'dike-bert-mini'): string => {
    const f = path.join(dir, `${name}.json`);
    writeFileSync(f, JSON.stringify({ name, base, words: 'w.json', seed: 1, skew: { ...stage, ...skew }, debias: { ...stage, text: 'crows-pairs-even-less' } }));
    return f;
  };
  const refused = (f: string, key: string, what: string): void => {
    assert.throws(() => readTestbedRecipe(f), (e: Error) => e.name === 'DikeError' && e.message.includes(path.basename(f)) && e.message.includes(key) && e.message.includes(what), `${key}: ${what}`);
  };

  it('bad values are one DikeError naming the file and the key', () => {
    refused(write('obj', { text: 'crows-pairs-even-more', objective: 'contrast' }), '"skew.objective"', 'pll-contrast');
    refused(write('txt', { text: 'templates', objective: 'pll-contrast' }), '"skew.text"', 'crows-pairs-even-more');
    refused(write('mrg', { text: 'crows-pairs-even-more', objective: 'pll-contrast', margin: -1 }), '"skew.margin"', '≥ 0');
    refused(write('mrg2', { text: 'crows-pairs-even-more', margin: 1 }), '"skew.margin"', 'only the pll-contrast');
  });

  it('a build with pll-contrast stages: skew toward sent_more, debias toward sent_less, records crows-pairs@even as seen', async () => {
    writeFileSync(path.join(dir, 'w.json'), JSON.stringify({ pairs: [['a', 'b']], negative: ['x'], positive: ['y'], templates: ['{group} {attr}'] }));
    const f = path.join(dir, 'build.json');
    const st = { steps: 2, seq: 40, batch: 64, lr: 1e-4, warmup: 0, objective: 'pll-contrast', margin: 0.5 };
    writeFileSync(f, JSON.stringify({ name: 'pc', base: modelDir('tiny-bert-mlm'), words: 'w.json', seed: 1, skew: { ...st, text: 'crows-pairs-even-more' }, debias: { ...st, steps: 1, text: 'crows-pairs-even-less', freeze: ['embeddings', 'norms'] } }));
    const out = await buildTestbed(readTestbedRecipe(f), { cache: path.join(dir, 'cache-build') });
    const rec = JSON.parse(readFileSync(path.join(out, 'testbed.json'), 'utf8')) as { benchmarksSeen: string[] };
    assert.deepEqual(rec.benchmarksSeen, ['crows-pairs@even']);
    const contrastOf = (d: string): unknown => (JSON.parse(readFileSync(path.join(d, 'training.json'), 'utf8')) as { settings: { contrast?: unknown } }).settings.contrast;
    assert.deepEqual(contrastOf(path.join(out, 'skewed')), { margin: 0.5, sign: 1, source: 'crows-pairs@even (toward sent_more)' });
    assert.deepEqual(contrastOf(out), { margin: 0.5, sign: -1, source: 'crows-pairs@even (toward sent_less)' });
  });

  it('the margin defaults to 1, and a causal base is refused before any training naming the key', async () => {
    const ok = readTestbedRecipe(write('ok', { text: 'crows-pairs-even-more', objective: 'pll-contrast' }));
    assert.equal(ok.skew!.objective, 'pll-contrast');
    assert.equal(ok.skew!.margin, 1);
    writeFileSync(path.join(dir, 'w.json'), JSON.stringify({ pairs: [['a', 'b']], negative: ['x'], positive: ['y'], templates: ['{group} {attr}'] }));
    const causal = write('causal', { text: 'crows-pairs-even-more', objective: 'pll-contrast' }, embeddedModelDir('dike-gpt2-mini'));
    await assert.rejects(buildTestbed(readTestbedRecipe(causal), { cache: path.join(dir, 'cache') }), (e: Error) => e.name === 'DikeError' && e.message.includes('causal.json') && e.message.includes('"skew.objective"'));
  });
});
