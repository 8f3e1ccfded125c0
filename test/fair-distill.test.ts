/**
 * Fair distillation's counterfactual gap penalty in the training step (step.ts, TrainStepSpec.counterfactual):
 * (β/K) Σ_k max(0, g_k² − t_k²), g_k the student's log P(stereotype_k) − log P(anti_k). Its value is
 * checked against the sentence log-probs that score/text.ts computes by ordinary inference, and its
 * gradient against central finite differences of the step graph's own loss along the gradient.
 */
import { after, describe, it } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { train, type TrainSettings } from '../src/train/loop.js';
import assert from 'node:assert/strict';
import { DATA, loadModelCached as load, modelDir, dike, assertOneLineError } from './fixtures.js';
import { sentencePairs } from '../src/measure/pairs.js';
import { ModelRunner } from '../src/runtime/session.js';
import { causalBos, scoreTexts } from '../src/score/text.js';
import { TrainSession, ROW_BUCKET, type StepBatch } from '../src/train/session.js';

const K = 3;
const BETA = 0.3;

describe('counterfactual gap penalty (tiny-gpt2, 3 StereoSet pairs in one batch)', () => {
  const ckpt = load('tiny-gpt2');
  const pairs = sentencePairs(DATA, { source: 'stereoset', limit: K });
  const texts = pairs.flatMap((p) => [p.stereotype, p.antiStereotype]);
  const bos = causalBos(ckpt);
  const seqs = texts.map((t) => [bos, ...ckpt.tokenizer.encode(t, { addSpecialTokens: false }).ids]);
  const B = seqs.length;
  const S = Math.max(...seqs.map((s) => s.length));
  // Scored positions: position k predicts token k + 1 of its sentence.
  const scored = seqs.flatMap((s, b) => s.slice(1).map((tok, k) => ({ b, row: b * S + k, tok })));
  const Rc = scored.length;
  const V = ckpt.shape.outputSize;
  let session: TrainSession | undefined;
  after(async () => session?.release());

  const batch = (teacherGap: number[]): StepBatch => {
    const inputIds = new BigInt64Array(B * S);
    const attentionMask = new BigInt64Array(B * S);
    seqs.forEach((s, b) => s.forEach((id, k) => ((inputIds[b * S + k] = BigInt(id)), (attentionMask[b * S + k] = 1n))));
    const cfMatrix = new Float32Array(K * Rc);
    scored.forEach((x, r) => (cfMatrix[Math.floor(x.b / 2) * Rc + r] = x.b % 2 === 0 ? 1 : -1));
    return {
      batch: B,
      seq: S,
      inputIds,
      attentionMask,
      rows: new BigInt64Array(ROW_BUCKET),
      targets: new BigInt64Array(ROW_BUCKET),
      weights: new Float32Array(ROW_BUCKET), // no CE / KD rows: the loss is the penalty alone
      teacherLogits: new Float32Array(ROW_BUCKET * V),
      cfRows: BigInt64Array.from(scored.map((x) => BigInt(x.row))),
      cfTargets: BigInt64Array.from(scored.map((x) => BigInt(x.tok))),
      cfMatrix,
      cfTeacherGap: Float32Array.from(teacherGap),
    };
  };

  const get = async (): Promise<TrainSession> =>
    (session ??= await TrainSession.create(
      ckpt,
      { batch: B, seq: S, rows: ROW_BUCKET, optimizer: 'grads', distill: { temperature: 1, kdWeight: 0, ceWeight: 0 }, counterfactual: { weight: BETA, pairs: K, rows: Rc } },
      1,
    ));

  /** The student's gaps, from score/text.ts (its own batching and scoring path). */
  const gaps = async (): Promise<number[]> => {
    const runner = await ModelRunner.create(ckpt, { threads: 1 });
    try {
      const s = await scoreTexts(ckpt, runner, texts);
      return pairs.map((_, k) => s[2 * k]!.total - s[2 * k + 1]!.total);
    } finally {
      await runner.dispose();
    }
  };

  it('the loss is (β/K) Σ max(0, g² − t²) with g from ordinary inference; the hinge is off where the teacher\'s gap is larger', async () => {
    const g = await gaps();
    // Pair 0: teacher gap 0 (all of g² penalised); pair 1: teacher gap 2|g| (nothing); pair 2: half of |g|.
    const t = [0, 2 * Math.abs(g[1]!), 0.5 * g[2]!];
    const expected = (BETA / K) * g.reduce((s, gk, k) => s + Math.max(0, gk * gk - t[k]! * t[k]!), 0);
    const { loss } = await (await get()).gradients(batch(t));
    // float32 log-probs of ~10-token sentences: ~1e-6 relative per sentence total.
    assert.ok(Math.abs(loss - expected) <= 1e-4 * expected, `loss ${loss}, expected ${expected}`);
    assert.ok(expected > 0);
  });

  it('every gradient is exactly 0 when each teacher gap exceeds the student\'s', async () => {
    const g = await gaps();
    const { loss, grads } = await (await get()).gradients(batch(g.map((x) => 2 * Math.abs(x) + 1)));
    assert.equal(loss, 0);
    for (const [k, v] of grads) assert.ok(v.every((x) => x === 0), k);
  });

  for (const name of ['transformer.h.1.mlp.c_fc.weight', 'transformer.h.0.attn.c_attn.weight', 'transformer.wte.weight']) {
    it(`d loss / d ${name} matches central finite differences along the gradient`, async () => {
      const s = await get();
      const g = await gaps();
      const b = batch([0, 0.5 * g[1]!, 0]);
      const { grads } = await s.gradients(b);
      const gr = grads.get(name)!;
      const norm = Math.sqrt(gr.reduce((a, x) => a + x * x, 0));
      assert.ok(norm > 0);
      const p = s.params.get(name)!;
      const base = Float32Array.from(p);
      // d = ∇/‖∇‖, so the directional derivative is ‖∇‖. Measured relative errors: h² truncation
      // (c_fc: 1.6e-3, 4e-4, 1.3e-4 at h = 2e-2, 1e-2, 5e-3) against float32 roundoff of the sentence
      // totals in the loss (c_attn: 2.3e-4 at h = 2.5e-3, 3.5e-5 at 5e-3). At h = 5e-3 all three are
      // ≤ 1.3e-4; 1e-3 leaves a 7× margin, and a wrong gradient is off by O(1).
      const h = 5e-3;
      const lossAt = async (sign: number): Promise<number> => {
        for (let i = 0; i < p.length; i++) p[i] = base[i]! + (sign * h * gr[i]!) / norm;
        return (await s.gradients(b)).loss;
      };
      const fd = ((await lossAt(1)) - (await lossAt(-1))) / (2 * h);
      p.set(base);
      assert.ok(Math.abs(fd - norm) <= 1e-3 * norm, `finite differences ${fd}, autodiff ${norm}`);
    });
  }
});

describe('the penalty in a training run (dike train --cf-pairs)', () => {
  const work = mkdtempSync(path.join(tmpdir(), 'dike-cf-'));
  after(() => rmSync(work, { recursive: true, force: true }));
  const settings = (cf?: TrainSettings['counterfactual']): TrainSettings => ({
    objective: 'causal-lm',
    data: [path.join(DATA, 'lm_corpus', 'train.txt')],
    seq: 32,
    batch: 2,
    steps: 1,
    schedule: { peak: 1e-3, warmup: 0, decay: 'constant', minRatio: 1 },
    adamw: { beta1: 0.9, beta2: 0.98, eps: 1e-6, weightDecay: 0.01, maxGradNorm: 1 },
    seed: 0,
    mlmProbability: 0.15,
    checkpointEvery: 0,
    freeze: [],
    keepSparsity: false,
    dtype: 'F32',
    threads: 1,
    ...(cf ? { counterfactual: cf } : {}),
  });

  let plainPromise: ReturnType<typeof train> | undefined;
  /** The same run without the penalty (shared by the tests below). */
  const plainRun = (): ReturnType<typeof train> => (plainPromise ??= train(load('tiny-gpt2'), settings(), path.join(work, 'plain'), { tokenizerDir: modelDir('tiny-gpt2') }));

  it('the first step\'s loss is the plain loss plus (β/P) Σ g² of the step\'s pairs (no teacher: t = 0), g scored independently', async () => {
    const ckpt = load('tiny-gpt2');
    const pairs = sentencePairs(DATA, { source: 'stereoset', limit: 2 });
    const beta = 0.7;
    const plain = await plainRun();
    const fair = await train(ckpt, settings({ source: 'stereoset', limit: 2, perStep: 2, weight: beta }), path.join(work, 'fair'), { tokenizerDir: modelDir('tiny-gpt2'), pairs });
    const runner = await ModelRunner.create(ckpt, { threads: 1 });
    let expected = 0;
    try {
      const s = await scoreTexts(ckpt, runner, pairs.flatMap((p) => [p.stereotype, p.antiStereotype]));
      for (let k = 0; k < 2; k++) expected += (beta / 2) * (s[2 * k]!.total - s[2 * k + 1]!.total) ** 2;
    } finally {
      await runner.dispose();
    }
    const got = fair.losses[0]! - plain.losses[0]!;
    // Both losses are float32 sums near 11 (≈ 1e-6 absolute apart for the text rows); the penalty is O(1).
    assert.ok(Math.abs(got - expected) <= 1e-4 * expected, `penalty ${got}, expected ${expected}`);
  });

  it('group re-weighting: the first step\'s penalty is (β/P) Σ w_k g_k², w = N / (G · n_group) written out by hand', async () => {
    const ckpt = load('tiny-gpt2');
    const pairs = sentencePairs(DATA, { source: 'stereoset', limit: 3 });
    // StereoSet's first three pairs: profession, race, profession → G = 2, n = {profession: 2, race: 1}.
    assert.deepEqual(pairs.map((p) => p.group), ['profession', 'race', 'profession']);
    const w = [3 / 4, 3 / 2, 3 / 4];
    const beta = 0.5;
    const plain = await plainRun();
    const fair = await train(ckpt, settings({ source: 'stereoset', limit: 3, perStep: 3, weight: beta, groupWeighting: 'inverse' }), path.join(work, 'fair-g'), { tokenizerDir: modelDir('tiny-gpt2'), pairs });
    const runner = await ModelRunner.create(ckpt, { threads: 1 });
    let expected = 0;
    try {
      const s = await scoreTexts(ckpt, runner, pairs.flatMap((p) => [p.stereotype, p.antiStereotype]));
      for (let k = 0; k < 3; k++) expected += (beta / 3) * w[k]! * (s[2 * k]!.total - s[2 * k + 1]!.total) ** 2;
    } finally {
      await runner.dispose();
    }
    const got = fair.losses[0]! - plain.losses[0]!;
    assert.ok(Math.abs(got - expected) <= 1e-4 * expected, `penalty ${got}, expected ${expected}`);
  });

  it('the CLI refuses the penalty for a masked LM in one line', () => {
    const r = dike(['train', '--model', modelDir('tiny-bert-mlm'), '--data', path.join(DATA, 'lm_corpus', 'train.txt'), '--steps', '1', '--cf-pairs', 'stereoset', '--pairs-data', DATA, '--out', path.join(work, 'mlm')]);
    assertOneLineError(r, 'counterfactual penalty', 'causal LM');
  });
});
