/**
 * Held-out (pseudo-)perplexity: the quality proxy an audit reads bias against.
 *   causal: exp(mean NLL) over every token; each line tokenized alone, split into chunks of at most
 *           maxPositions − 1 tokens, each chunk scored after BOS as its only context.
 *   masked: exp(−mean log P(token | rest)) with each token masked alone (Salazar et al. 2020); each line
 *           split into chunks of at most maxPositions − 2 tokens, each wrapped as [CLS] chunk [SEP].
 * These are the definitions in ../shared/models/<model>/TRAINING.md, whose reference values the tests check.
 */
import type { Checkpoint } from '../model/checkpoint.js';
import type { ModelRunner } from '../runtime/session.js';
import { DikeError } from '../errors.js';
import { causalTokenLogprobs, type ScoreOptions } from './causal.js';
import { maskedTokenLogprobs } from './masked.js';
import { causalBos, maskAndPadIds } from './text.js';

export interface Perplexity {
  kind: 'perplexity' | 'pseudo-perplexity';
  value: number;
  /** Mean negative log-likelihood per token (nats). */
  nll: number;
  tokens: number;
  lines: number;
}

function chunks(ids: number[], size: number): number[][] {
  const out: number[][] = [];
  for (let i = 0; i < ids.length; i += size) out.push(ids.slice(i, i + size));
  return out;
}

export async function heldOutPerplexity(
  ckpt: Checkpoint,
  runner: ModelRunner,
  lines: readonly string[],
  opts: ScoreOptions & { maxPositions?: number } = {},
): Promise<Perplexity> {
  const maxPos = opts.maxPositions ?? ckpt.shape.maxPositions;
  const tok = ckpt.tokenizer;
  let sum = 0;
  let n = 0;
  if (ckpt.task === 'causal-lm') {
    const bos = causalBos(ckpt);
    const jobs = lines.flatMap((l) => chunks(tok.encode(l, { addSpecialTokens: false }).ids, maxPos - 1)).map((ids) => ({ ids }));
    for (const lp of await causalTokenLogprobs(runner, bos, jobs, opts)) for (const v of lp) (sum += v), n++;
    return { kind: 'perplexity', value: Math.exp(-sum / n), nll: -sum / n, tokens: n, lines: lines.length };
  }
  if (ckpt.task === 'masked-lm') {
    const { mask, pad } = maskAndPadIds(ckpt);
    const cls = tok.special.cls;
    const sep = tok.special.sep;
    if (cls === undefined || sep === undefined) throw new DikeError(ckpt.dir, 'tokenizer', 'pseudo-perplexity needs [CLS] and [SEP] tokens');
    const jobs = lines
      .flatMap((l) => chunks(tok.encode(l, { addSpecialTokens: false }).ids, maxPos - 2))
      .map((c) => ({ ids: [cls, ...c, sep], positions: c.map((_, i) => i + 1) }));
    for (const lp of await maskedTokenLogprobs(runner, mask, pad, jobs, opts)) for (const v of lp) (sum += v), n++;
    return { kind: 'pseudo-perplexity', value: Math.exp(-sum / n), nll: -sum / n, tokens: n, lines: lines.length };
  }
  throw new DikeError(ckpt.configFile, '"architectures"', `${ckpt.hfClass} is a classifier: perplexity needs a language model`);
}
