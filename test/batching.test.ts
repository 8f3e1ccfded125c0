/**
 * Batching never changes a number: length buckets (hand-made cases), and the pseudo-log-likelihood of
 * many sentences in one call equal, bit for bit, to one sentence per call, with no padded row sent.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { loadCheckpoint } from '../src/model/checkpoint.js';
import { HEAD_CHUNK_ROWS, ModelRunner, gatherRows, lengthBuckets, padBatch, type PaddedBatch } from '../src/runtime/session.js';
import { MASKED_MAX_TOKENS, maskedBuckets, maskedTokenLogprobs, nonSpecialPositions } from '../src/score/masked.js';
import { maskAndPadIds } from '../src/score/text.js';
import { DATA, modelDir } from './fixtures.js';

describe('lengthBuckets', () => {
  it('without a padding limit, fills batches in length order up to the token cap', () => {
    // lengths 5 3 5 4 3, one row each; sorted order 1 4 3 0 2 (lengths 3 3 4 5 5).
    // cap 12: [1,4] (2·3 = 6), then +3 → 3·4 = 12 ok, then +0 → 4·5 = 20 > 12: new batch [0,2] (10).
    assert.deepEqual(lengthBuckets([5, 3, 5, 4, 3], [1, 1, 1, 1, 1], 12), [
      [1, 4, 3],
      [0, 2],
    ]);
  });

  it('with maxPadding 0, a batch holds one length only (and still respects the token cap)', () => {
    assert.deepEqual(lengthBuckets([5, 3, 5, 4, 3], [1, 1, 1, 1, 1], 12, 0), [[1, 4], [3], [0, 2]]);
    // Rows per item: items 0 and 2 (length 5) bring 2 rows each, 2·5 + 2·5 = 20 > 12: split.
    assert.deepEqual(lengthBuckets([5, 3, 5], [2, 1, 2], 12, 0), [[1], [0], [2]]);
  });

  it('with maxPadding 0.5, padding up to half the real tokens is allowed', () => {
    // lengths 2 3 4 (sorted already): [2,3] → 2 rows · 3 = 6 tokens, 5 real: padding 1 ≤ 2.5;
    // + length 4 → 3 · 4 = 12, 9 real: padding 3 ≤ 4.5; so one batch. With 0.2: [2,3] pads 1 ≤ 0.2 · 5
    // and stays; + length 4 pads 3 > 0.2 · 9 and starts a new batch.
    assert.deepEqual(lengthBuckets([2, 3, 4], [1, 1, 1], 100, 0.5), [[0, 1, 2]]);
    assert.deepEqual(lengthBuckets([2, 3, 4], [1, 1, 1], 100, 0.2), [[0, 1], [2]]);
  });

  it('maskedBuckets groups equal-length jobs, each job whole', () => {
    const jobs = [
      { ids: [1, 2, 3, 4], positions: [1, 2] },
      { ids: [1, 2, 3], positions: [1] },
      { ids: [5, 6, 7, 8], positions: [1, 2] },
    ];
    assert.deepEqual(maskedBuckets(jobs, 1000), [[1], [0, 2]]);
  });
});

describe('pseudo-log-likelihood batching on small-bert-mlm', () => {
  it('32 sentences in one call equal one sentence per call, bit for bit, and no batch row is padded', async () => {
    const ckpt = loadCheckpoint(modelDir('small-bert-mlm'));
    const runner = await ModelRunner.create(ckpt, { threads: 1 });
    const { mask, pad } = maskAndPadIds(ckpt);
    const lines = readFileSync(path.join(DATA, 'lm_corpus', 'valid.txt'), 'utf8').split('\n').filter((l) => l.trim() !== '');
    const jobs = lines
      .map((t) => ckpt.tokenizer.encode(t).ids)
      .filter((ids) => ids.length >= 8 && ids.length <= 40)
      .slice(0, 32)
      .map((ids) => ({ ids, positions: nonSpecialPositions(ids, ckpt.tokenizer.specialIds) }));
    assert.ok(new Set(jobs.map((j) => j.ids.length)).size < jobs.length, 'the sample has sentences of equal length, so some batches hold several');
    // Record every batch the body sees.
    const seen: PaddedBatch[] = [];
    const hidden = runner.hidden.bind(runner);
    runner.hidden = async (batch, layers) => (seen.push(batch), hidden(batch, layers));
    const together = await maskedTokenLogprobs(runner, mask, pad, jobs, { maxTokens: Number.POSITIVE_INFINITY });
    const batchesTogether = seen.length;
    const alone: Float32Array[] = [];
    for (const j of jobs) alone.push(...(await maskedTokenLogprobs(runner, mask, pad, [j])));
    await runner.dispose();
    for (const b of seen) assert.ok(b.lengths.every((l) => l === b.seq), `a batch of ${b.batch} rows padded to ${b.seq}: lengths ${b.lengths.join(' ')}`);
    assert.equal(batchesTogether, new Set(jobs.map((j) => j.ids.length)).size, 'one batch per distinct length');
    jobs.forEach((j, i) => {
      assert.equal(together[i]!.length, j.positions.length);
      assert.deepEqual(Array.from(together[i]!), Array.from(alone[i]!), `sentence ${i}`);
    });
  });
});

describe('the default token cap of masked scoring', () => {
  it('splits batches at MASKED_MAX_TOKENS (never a job) and changes no log-probability, bit for bit', async () => {
    const ckpt = loadCheckpoint(modelDir('small-bert-mlm'));
    const runner = await ModelRunner.create(ckpt, { threads: 1 });
    const { mask, pad } = maskAndPadIds(ckpt);
    // Eight copies of each of two short sentences (same length within each): every job is well under
    // the cap, together they exceed it, so the default call must split them into several batches.
    const lines = readFileSync(path.join(DATA, 'lm_corpus', 'valid.txt'), 'utf8').split('\n').filter((l) => l.trim() !== '');
    const picked = lines.map((t) => ckpt.tokenizer.encode(t).ids).filter((ids) => ids.length >= 20 && ids.length <= 30);
    const a = picked[0]!;
    const b = picked.find((ids) => ids.length !== a.length)!;
    const jobs = [...Array(8).fill(a), ...Array(8).fill(b)].map((ids: number[]) => ({ ids, positions: nonSpecialPositions(ids, ckpt.tokenizer.specialIds) }));
    const tokensOf = (ids: number[]): number => ids.length * nonSpecialPositions(ids, ckpt.tokenizer.specialIds).length;
    assert.ok(8 * tokensOf(a) > MASKED_MAX_TOKENS && tokensOf(a) < MASKED_MAX_TOKENS, 'the sample exceeds the cap only together');
    const seen: PaddedBatch[] = [];
    const hidden = runner.hidden.bind(runner);
    runner.hidden = async (batch, layers) => (seen.push(batch), hidden(batch, layers));
    const capped = await maskedTokenLogprobs(runner, mask, pad, jobs);
    const cappedBatches = seen.splice(0);
    const uncapped = await maskedTokenLogprobs(runner, mask, pad, jobs, { maxTokens: Number.POSITIVE_INFINITY });
    const uncappedBatches = seen.splice(0);
    await runner.dispose();
    assert.equal(uncappedBatches.length, 2, 'without a cap: one batch per length');
    // Each length's 8 jobs, in batches of as many whole jobs as fit under the cap.
    const expected = [a, b].reduce((n, ids) => n + Math.ceil(8 / Math.floor(MASKED_MAX_TOKENS / tokensOf(ids))), 0);
    assert.equal(cappedBatches.length, expected);
    for (const x of cappedBatches) assert.ok(x.batch * x.seq <= MASKED_MAX_TOKENS, `a batch of ${x.batch} × ${x.seq} tokens`);
    jobs.forEach((_, i) => assert.deepEqual(Array.from(capped[i]!), Array.from(uncapped[i]!), `job ${i}`));
  });
});

describe('logits at the real tokens of a padded batch', () => {
  it('tokenLogits equals the head over all B·S rows at the unpadded rows, bit for bit', async () => {
    const ckpt = loadCheckpoint(modelDir('small-bert-mlm'));
    const runner = await ModelRunner.create(ckpt, { threads: 1 });
    const { pad } = maskAndPadIds(ckpt);
    const texts = ['the cat sat on the mat .', 'a', 'she went to the market yesterday to buy some bread and milk .'];
    const batch = padBatch(texts.map((t) => ckpt.tokenizer.encode(t).ids), pad);
    assert.ok(Math.min(...batch.lengths) < batch.seq, 'the batch has padded rows');
    const V = ckpt.shape.outputSize;
    const got = await runner.tokenLogits(batch);
    const [last] = await runner.hidden(batch);
    const full = await runner.logits(last!, batch.batch * batch.seq);
    await runner.dispose();
    const real = batch.lengths.reduce((a, b) => a + b, 0);
    assert.equal(got.length, real * V);
    let k = 0;
    batch.lengths.forEach((len, r) => {
      for (let p = 0; p < len; p++, k++) {
        const want = full.subarray((r * batch.seq + p) * V, (r * batch.seq + p + 1) * V);
        assert.deepEqual(got.subarray(k * V, (k + 1) * V), want, `row ${r} position ${p}`);
      }
    });
  });
});

describe('the head in chunks of rows', () => {
  it('logits over 300 rows (three chunks) equal, bit for bit, logits over 3 of those rows at a time, across chunk edges', async () => {
    const ckpt = loadCheckpoint(modelDir('small-bert-mlm'));
    const runner = await ModelRunner.create(ckpt, { threads: 2 });
    const { pad } = maskAndPadIds(ckpt);
    const lines = readFileSync(path.join(DATA, 'lm_corpus', 'valid.txt'), 'utf8').split('\n').filter((l) => l.trim() !== '');
    const batch = padBatch(lines.slice(0, 12).map((t) => ckpt.tokenizer.encode(t).ids.slice(0, 30)), pad);
    const [last] = await runner.hidden(batch);
    const H = ckpt.shape.hiddenSize;
    const V = ckpt.shape.outputSize;
    const at: [number, number][] = [];
    for (let k = 0; k < 300; k++) at.push([k % batch.batch, (k * 7) % batch.seq]);
    assert.ok(300 > 2 * HEAD_CHUNK_ROWS, 'the rows span three chunks');
    const all = await runner.logits(gatherRows(last!, batch.seq, H, at), at.length);
    assert.equal(all.length, 300 * V);
    for (const k of [0, HEAD_CHUNK_ROWS - 1, HEAD_CHUNK_ROWS, 2 * HEAD_CHUNK_ROWS + 1, 299]) {
      const few = [at[k]!, at[(k + 1) % 300]!, at[(k + 2) % 300]!];
      const got = await runner.logits(gatherRows(last!, batch.seq, H, few), 3);
      assert.deepEqual(got.subarray(0, V), all.subarray(k * V, (k + 1) * V), `row ${k}`);
    }
    await runner.dispose();
  });
});
