/**
 * Causal LM token log-probabilities: log P(tᵢ | BOS, t₍<i₎) for every token of a text, where BOS is
 * the model's bos token (<|endoftext|> for GPT-2). This is what lm-evaluation-harness computes for
 * a continuation with an empty context (the EOT token stands in as the context).
 */
import { DikeError } from '../errors.js';
import { ModelRunner, gatherRows, lengthBuckets, padBatch } from '../runtime/session.js';

export interface CausalJob {
  /** Token ids to score. */
  ids: readonly number[];
  /**
   * Conditioning ids placed before `ids` and not scored. Default: [BOS], i.e. log P(tᵢ | BOS, t₍<i₎).
   * Pass e.g. [BOS, ...question] (or the context without BOS, as lm-evaluation-harness does for a
   * non-empty context) to score a continuation.
   */
  context?: readonly number[];
}

export interface ScoreOptions {
  /** Upper bound on batch rows × padded length per forward pass. */
  maxTokens?: number;
}

export const DEFAULT_MAX_TOKENS = 8192;

/** For each job, one log-probability per token of `ids`, conditioned on BOS and the tokens before it. */
export async function causalTokenLogprobs(runner: ModelRunner, bos: number, jobs: readonly CausalJob[], opts: ScoreOptions = {}): Promise<Float32Array[]> {
  const maxTokens = opts.maxTokens ?? DEFAULT_MAX_TOKENS;
  const maxLen = runner.model.shape.maxPositions;
  const contexts = jobs.map((j) => j.context ?? [bos]);
  const seqs = jobs.map((j, i) => {
    const ctx = contexts[i]!;
    if (ctx.length === 0) throw new RangeError(`text ${i + 1}: a causal score needs at least one context token (BOS)`);
    if (j.ids.length + ctx.length > maxLen) {
      throw new DikeError('', `text ${i + 1}`, `${j.ids.length} tokens + ${ctx.length === 1 ? 'BOS' : `${ctx.length} context tokens`} exceed the model's ${maxLen} positions`);
    }
    return [...ctx, ...j.ids];
  });
  const results: Float32Array[] = new Array(jobs.length);
  const H = runner.hiddenSize;
  for (const group of lengthBuckets(seqs.map((s) => s.length), seqs.map(() => 1), maxTokens)) {
    const batch = padBatch(group.map((i) => seqs[i]!), bos);
    const [last] = await runner.hidden(batch, [runner.numLayers]);
    // Row c+k-1 (c = context length) predicts input position c+k, i.e. ids[k].
    const at: [number, number][] = [];
    const targets: number[] = [];
    group.forEach((i, r) => {
      const c = contexts[i]!.length;
      jobs[i]!.ids.forEach((id, k) => (at.push([r, c + k - 1]), targets.push(id)));
    });
    const lp = await runner.logprobs(gatherRows(last!, batch.seq, H, at), targets);
    let off = 0;
    for (const i of group) {
      const n = jobs[i]!.ids.length;
      results[i] = lp.slice(off, off + n);
      off += n;
    }
  }
  return results;
}
