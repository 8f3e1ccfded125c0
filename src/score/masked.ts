/**
 * Masked-LM scoring. For a token sequence and a set of positions, each position is replaced by
 * [MASK] alone, in its own copy of the sequence, and log P(original token) is read at that position.
 * The pseudo-log-likelihood (Salazar et al. 2020; Nangia et al. 2020 for CrowS-Pairs) is the sum over
 * every non-special position. The masked copies of one sequence always go through the model in the
 * same batch; several sequences of the same length share a batch (no padding: see maskedBuckets).
 */
import { DikeError } from '../errors.js';
import { ModelRunner, gatherRows, lengthBuckets, padBatch } from '../runtime/session.js';
import type { ScoreOptions } from './causal.js';

export interface MaskedJob {
  /** The full token ids, special tokens included ([CLS] … [SEP]). */
  ids: readonly number[];
  /** Positions to mask one at a time and score. */
  positions: readonly number[];
}

/**
 * Default cap on tokens (rows × length) per forward batch of masked copies. Past ≈ 2–4 K tokens a
 * BERT's activations stop fitting the cache and every token costs more: CPU µs per token of one
 * sentence's 22 copies repeated k times (bench/pll-tokens.ts, 2 threads, AMD EPYC) were, at 528 /
 * 1056 / 2112 / 4224 / 8448 tokens per call, 2177 / 2146 / 2157 / 2350 / 2294 on BERT-base-size and
 * 110.5 / 107.2 / 104.7 / 110.3 / 110.0 on small-bert-mlm. With 8192, batching sentences made
 * BERT-base-size's PLL slower than one sentence per call (bench/RESULTS.md, issue 15). A job's copies
 * are never split, so one long sentence may still exceed it. Every row's result is the same whatever
 * the batch (test/batching.test.ts).
 */
export const MASKED_MAX_TOKENS = 2048;

export async function maskedTokenLogprobs(
  runner: ModelRunner,
  maskId: number,
  padId: number,
  jobs: readonly MaskedJob[],
  opts: ScoreOptions = {},
): Promise<Float32Array[]> {
  const maxTokens = opts.maxTokens ?? MASKED_MAX_TOKENS;
  const maxLen = runner.model.shape.maxPositions;
  jobs.forEach((j, i) => {
    if (j.ids.length > maxLen) throw new DikeError('', `text ${i + 1}`, `${j.ids.length} tokens exceed the model's ${maxLen} positions`);
    for (const p of j.positions) if (!Number.isInteger(p) || p < 0 || p >= j.ids.length) throw new RangeError(`text ${i}: position ${p} outside the sequence`);
  });
  const results: Float32Array[] = jobs.map((j) => new Float32Array(j.positions.length));
  const H = runner.hiddenSize;
  const groups = maskedBuckets(jobs, maxTokens);
  for (const group of groups) {
    const rows: number[][] = [];
    const at: [number, number][] = [];
    const targets: number[] = [];
    for (const i of group) {
      const { ids, positions } = jobs[i]!;
      for (const p of positions) {
        const copy = ids.slice();
        copy[p] = maskId;
        at.push([rows.length, p]);
        targets.push(ids[p]!);
        rows.push(copy);
      }
    }
    if (rows.length === 0) continue;
    const batch = padBatch(rows, padId);
    const [last] = await runner.hidden(batch, [runner.numLayers]);
    const lp = await runner.logprobs(gatherRows(last!, batch.seq, H, at), targets);
    let off = 0;
    for (const i of group) {
      const n = jobs[i]!.positions.length;
      results[i]!.set(lp.subarray(off, off + n));
      off += n;
    }
  }
  return results;
}

/**
 * The forward batches of maskedTokenLogprobs: jobs of equal length, up to `maxTokens` tokens (a job's
 * copies are never split). A sequence is never padded: with up to 40 % padding, batching 8–32
 * sentences was slower than one sentence at a time (bench/RESULTS.md, issue 15), and a job already
 * brings as many rows as it has scored positions, so same-length batches are large enough.
 */
export function maskedBuckets(jobs: readonly MaskedJob[], maxTokens: number): number[][] {
  return lengthBuckets(jobs.map((j) => j.ids.length), jobs.map((j) => j.positions.length), maxTokens, 0);
}

/** Positions of every non-special token: the pseudo-log-likelihood's scored positions. */
export function nonSpecialPositions(ids: readonly number[], specialIds: ReadonlySet<number>): number[] {
  const out: number[] = [];
  ids.forEach((id, p) => {
    if (!specialIds.has(id)) out.push(p);
  });
  return out;
}
