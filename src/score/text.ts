/**
 * Per-text log-probabilities for any language model, the quantity every bias benchmark builds on:
 *   causal LM: log P(tᵢ | BOS, t₍<i₎) for every token (BOS = config bos_token_id, else the tokenizer's bos/eos)
 *   masked LM: pseudo-log-likelihood terms, each non-special token masked alone
 */
import type { Checkpoint } from '../model/checkpoint.js';
import { DikeError } from '../errors.js';
import type { ModelRunner } from '../runtime/session.js';
import { causalTokenLogprobs, type ScoreOptions } from './causal.js';
import { maskedTokenLogprobs, nonSpecialPositions } from './masked.js';

export interface TextScore {
  text: string;
  /** Token strings of the full encoding (BERT: with [CLS] and [SEP]; GPT-2: as encoded, no BOS). */
  tokens: string[];
  ids: number[];
  /** Indices into `ids` of the scored tokens; `logprobs[j]` belongs to `ids[positions[j]]`. */
  positions: number[];
  logprobs: number[];
  /** Sum of `logprobs`, accumulated in float64. */
  total: number;
}

export function causalBos(ckpt: Pick<Checkpoint, 'rawConfig' | 'tokenizer' | 'configFile'>): number {
  const fromConfig = ckpt.rawConfig['bos_token_id'];
  if (typeof fromConfig === 'number') return fromConfig;
  const id = ckpt.tokenizer.special.bos ?? ckpt.tokenizer.special.eos;
  if (id === undefined) throw new DikeError(ckpt.configFile, '"bos_token_id"', 'causal scoring needs a BOS token and neither the config nor the tokenizer defines one');
  return id;
}

export function maskAndPadIds(ckpt: Pick<Checkpoint, 'tokenizer' | 'dir'>): { mask: number; pad: number } {
  const { mask, pad } = ckpt.tokenizer.special;
  if (mask === undefined) throw new DikeError(ckpt.dir, 'tokenizer', 'masked-LM scoring needs a mask token and the tokenizer defines none');
  return { mask, pad: pad ?? 0 };
}

function sum(xs: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < xs.length; i++) s += xs[i]!;
  return s;
}

export async function scoreTexts(ckpt: Checkpoint, runner: ModelRunner, texts: readonly string[], opts: ScoreOptions = {}): Promise<TextScore[]> {
  const enc = texts.map((t) => ckpt.tokenizer.encode(t));
  // An id the embedding cannot index must not reach ONNX Runtime's Gather.
  enc.forEach((e, i) => {
    const k = e.ids.findIndex((id) => !(Number.isInteger(id) && id >= 0 && id < ckpt.shape.vocabSize));
    if (k >= 0) throw new DikeError(ckpt.tokenizer.file, `text ${i + 1}`, `token ${JSON.stringify(e.tokens[k])} has id ${e.ids[k]}, outside the model's vocabulary (vocab_size ${ckpt.shape.vocabSize})`);
  });
  if (ckpt.task === 'causal-lm') {
    const lps = await causalTokenLogprobs(runner, causalBos(ckpt), enc.map((e) => ({ ids: e.ids })), opts);
    return texts.map((text, i) => ({
      text,
      tokens: enc[i]!.tokens,
      ids: enc[i]!.ids,
      positions: enc[i]!.ids.map((_, k) => k),
      logprobs: Array.from(lps[i]!),
      total: sum(lps[i]!),
    }));
  }
  if (ckpt.task === 'masked-lm') {
    const { mask, pad } = maskAndPadIds(ckpt);
    const jobs = enc.map((e) => ({ ids: e.ids, positions: nonSpecialPositions(e.ids, ckpt.tokenizer.specialIds) }));
    const lps = await maskedTokenLogprobs(runner, mask, pad, jobs, opts);
    return texts.map((text, i) => ({
      text,
      tokens: enc[i]!.tokens,
      ids: enc[i]!.ids,
      positions: jobs[i]!.positions,
      logprobs: Array.from(lps[i]!),
      total: sum(lps[i]!),
    }));
  }
  throw new DikeError(ckpt.configFile, '"architectures"', `${ckpt.hfClass} is a classifier; log-probabilities of text need a language model`);
}
