/**
 * Golden comparisons against ../shared/models (an independent PyTorch implementation of the HF
 * modules): token ids exact; hidden states of every layer, logits and per-token log-probs within
 * float32 rounding (2e-5), totals within 5e-5, classifier probabilities within 1e-6.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { loadCheckpoint, type Checkpoint } from '../src/model/checkpoint.js';
import { ModelRunner, gatherRows, padBatch } from '../src/runtime/session.js';
import { scoreTexts } from '../src/score/text.js';
import { maskedTokenLogprobs } from '../src/score/masked.js';
import { logSoftmaxRow, maxAbsDiff, modelDir, readGolden } from './fixtures.js';

// Tolerances are float32 rounding, sized from the worst error measured over the six shared models
// (tiny/small BERT, GPT-2, tiny Llama, tiny BERT classifier; every text, layer and stored logit row):
//   hidden states 1.4e-6 (small-bert-mlm), logits 6.7e-6 (small-bert-mlm, |logit| up to ~20, where one
//   float32 ulp is 1.9e-6), per-token log-probs 1.9e-6, totals 7.6e-6 (tiny-gpt2, a sum of ~15 terms).
// 2e-5 per value is 3× the worst logit error (14× the worst hidden-state error); 5e-5 per total is 6.5×
// the worst total. A wrong scale, a dropped bias or an off-by-one position moves values by ≥ 1e-3.
const TOL = 2e-5;
const TOTAL_TOL = 5e-5;
// Classifier probabilities: measured worst 6.7e-8 (logits 4.8e-7); 1e-6 is 15× that.
const PROB_TOL = 1e-6;

const LM_MODELS = ['tiny-bert-mlm', 'tiny-gpt2', 'tiny-llama', 'small-bert-mlm', 'small-gpt2'];

for (const name of [...LM_MODELS, 'tiny-bert-cls']) {
  describe(`${name} matches its golden outputs`, () => {
    let ckpt: Checkpoint;
    let runner: ModelRunner;
    const { golden, tensors } = readGolden(name);
    const causal = golden.texts[0]!.input_ids !== undefined;
    const L = golden.num_hidden_entries - 1;
    // The sequence actually run: BOS-prefixed for causal models.
    const runIds = golden.texts.map((t) => t.input_ids ?? t.ids);

    before(async () => {
      ckpt = loadCheckpoint(modelDir(name));
      runner = await ModelRunner.create(ckpt, { threads: 2 });
    });
    after(async () => runner.dispose());

    it('has the golden architecture and layer count', () => {
      assert.equal(ckpt.hfClass, golden.architecture);
      assert.equal(ckpt.shape.numLayers, L);
    });

    it('tokenizes every text to the golden ids and tokens', () => {
      for (const t of golden.texts) {
        const e = ckpt.tokenizer.encode(t.text);
        assert.deepEqual(e.ids, t.ids, t.text);
        assert.deepEqual(e.tokens, t.tokens, t.text);
      }
    });

    it('gives every layer\'s hidden states within float32 rounding (2e-5), text by text', async () => {
      for (let i = 0; i < golden.texts.length; i++) {
        const layers = Array.from({ length: L + 1 }, (_, l) => l);
        const hs = await runner.hidden(padBatch([runIds[i]!], 0), layers);
        for (const l of layers) {
          const g = tensors.get(`hidden.${i}.${l}`)!;
          assert.deepEqual(g.shape, [runIds[i]!.length, ckpt.shape.hiddenSize]);
          const d = maxAbsDiff(hs[l]!, g.data);
          assert.ok(d <= TOL, `text ${i} layer ${l}: max |Δ| = ${d}`);
        }
      }
    });

    if (name === 'tiny-bert-cls') {
      it('gives the classifier logits, probabilities and label', async () => {
        for (let i = 0; i < golden.texts.length; i++) {
          const t = golden.texts[i]!;
          const [last] = await runner.hidden(padBatch([t.ids], 0));
          const logits = await runner.logits(gatherRows(last!, t.ids.length, ckpt.shape.hiddenSize, [[0, 0]]), 1);
          assert.ok(maxAbsDiff(logits, t.logits!) <= TOL, `text ${i} logits`);
          const probs = Array.from(logSoftmaxRow(logits), Math.exp);
          assert.ok(maxAbsDiff(probs, t.probs!) <= PROB_TOL, `text ${i} probs`);
          const best = probs.indexOf(Math.max(...probs));
          assert.equal(ckpt.shape.labels![best], t.predicted_label);
        }
      });
      return;
    }

    it('gives the full logits within float32 rounding (2e-5) where the golden stores them', async () => {
      for (const i of golden.logits_stored_for_texts) {
        const ids = runIds[i]!;
        const [last] = await runner.hidden(padBatch([ids], 0));
        const logits = await runner.logits(last!, ids.length);
        const g = tensors.get(`logits.${i}`)!;
        assert.deepEqual(g.shape, [ids.length, ckpt.shape.vocabSize]);
        const d = maxAbsDiff(logits, g.data);
        assert.ok(d <= TOL, `text ${i}: max |Δ logits| = ${d}`);
      }
    });

    it('reproduces the golden per-token log-probs (2e-5) and totals (5e-5)', async () => {
      const scores = await scoreTexts(ckpt, runner, golden.texts.map((t) => t.text));
      scores.forEach((s, i) => {
        const t = golden.texts[i]!;
        const lp = causal ? t.logprobs! : t.pll_logprobs!;
        const total = causal ? t.total! : t.pll_total!;
        if (!causal) assert.deepEqual(s.positions, t.pll_positions);
        assert.equal(s.logprobs.length, lp.length);
        assert.ok(maxAbsDiff(s.logprobs, lp) <= TOL, `text ${i}: max |Δ logprob| = ${maxAbsDiff(s.logprobs, lp)}`);
        assert.ok(Math.abs(s.total - total) <= TOTAL_TOL, `text ${i}: total ${s.total} vs ${total}`);
      });
    });

    it('gives the same hidden states in the right-padded golden batch as text by text', async () => {
      const { input_ids, attention_mask } = golden.batch;
      const batch = padBatch(
        input_ids.map((row, r) => row.slice(0, attention_mask[r]!.reduce((a, b) => a + b, 0))),
        golden.batch.pad_token_id,
      );
      assert.deepEqual(Array.from(batch.inputIds, Number), input_ids.flat());
      const layers = Array.from({ length: L + 1 }, (_, l) => l);
      const hs = await runner.hidden(batch, layers);
      const H = ckpt.shape.hiddenSize;
      for (let r = 0; r < batch.batch; r++) {
        const single = await runner.hidden(padBatch([runIds[r]!], 0), layers);
        for (const l of layers) {
          const rows = hs[l]!.subarray(r * batch.seq * H, (r * batch.seq + batch.lengths[r]!) * H);
          assert.ok(maxAbsDiff(rows, tensors.get(`hidden.${r}.${l}`)!.data) <= TOL, `row ${r} layer ${l} vs golden`);
          // Measured 0 (bit-identical) here; a different padded length may pick another GEMM blocking on
          // other CPUs, so a few float32 ulps of a hidden state (|h| ≲ 10) are allowed.
          assert.ok(maxAbsDiff(rows, single[l]!) <= 1e-5, `row ${r} layer ${l}: batched vs alone`);
        }
      }
    });

    it('projects only at chosen rows exactly as the full projection does at those rows', async () => {
      const ids = runIds[3]!;
      const H = ckpt.shape.hiddenSize;
      const V = ckpt.shape.vocabSize;
      const [last] = await runner.hidden(padBatch([ids], 0));
      const full = await runner.logits(last!, ids.length);
      const chosen = [ids.length - 1, 2, 0, 5];
      const part = await runner.logits(gatherRows(last!, ids.length, H, chosen.map((p) => [0, p] as const)), chosen.length);
      const targets = chosen.map((p) => ids[(p + 1) % ids.length]!);
      const lp = await runner.logprobs(gatherRows(last!, ids.length, H, chosen.map((p) => [0, p] as const)), targets);
      chosen.forEach((p, j) => {
        const fullRow = full.subarray(p * V, (p + 1) * V);
        assert.ok(maxAbsDiff(part.subarray(j * V, (j + 1) * V), fullRow) <= 1e-6, `row ${p}`);
        assert.ok(Math.abs(lp[j]! - logSoftmaxRow(fullRow)[targets[j]!]!) <= 1e-5, `logprob at row ${p}`);
      });
    });

    if (!causal) {
      it('scores masked copies the same in one batch as one copy at a time', async () => {
        const { mask, pad } = { mask: ckpt.tokenizer.special.mask!, pad: ckpt.tokenizer.special.pad ?? 0 };
        const t = golden.texts[2]!;
        const together = await maskedTokenLogprobs(runner, mask, pad, [{ ids: t.ids, positions: t.pll_positions! }]);
        const alone = await maskedTokenLogprobs(runner, mask, pad, t.pll_positions!.map((p) => ({ ids: t.ids, positions: [p] })), { maxTokens: 1 });
        assert.ok(maxAbsDiff(together[0]!, alone.map((a) => a[0]!)) <= 1e-5);
        // Sentences of different lengths sharing a padded batch.
        const mixed = await maskedTokenLogprobs(runner, mask, pad, golden.texts.map((g) => ({ ids: g.ids, positions: g.pll_positions! })));
        mixed.forEach((m, i) => assert.ok(maxAbsDiff(m, golden.texts[i]!.pll_logprobs!) <= TOL, `text ${i} in a mixed batch`));
      });
    }
  });
}
