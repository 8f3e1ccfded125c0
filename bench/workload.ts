/**
 * The benchmark's inputs, fixed once as token ids and shared with the PyTorch side through a JSON
 * file, so that both sides run exactly the same batches.
 *
 *   forward  B sentences right-padded, full forward pass including the MLM head at every position
 *            (logits [B, S, V]). Counted tokens: the real (unpadded) tokens.
 *   forward-real  the same, with the head at the real (unpadded) tokens only (logits [Σ len, V]).
 *   pll      pseudo-log-likelihood: every non-special position of a sentence masked alone; the
 *            masked copies of B sentences go through the body in one batch, and the head (and log
 *            softmax) runs only at the masked rows. Counted tokens: the scored positions. Dikē is
 *            handed the B sentences in one call and forms same-length batches (maskedBuckets); the
 *            case's `batches` list those, and the PyTorch side runs exactly them.
 *
 * Checksums, computed identically on both sides from one pass's outputs (float64 accumulation):
 *   forward  Σ logits[b, p, v] over every vocabulary entry v at positions p ∈ {0, 1, len−1}
 *            of every sentence; `scale` is the same sum of |logits|.
 *   pll      Σ of all the log-probabilities; `scale` is Σ |log-probabilities|.
 */
import * as fs from 'node:fs';
import type { Tokenizer } from '../src/model/tokenizer.js';
import { MASKED_MAX_TOKENS, maskedBuckets, nonSpecialPositions } from '../src/score/masked.js';

export type Kind = 'forward' | 'forward-real' | 'pll';

export interface Sentence {
  text: string;
  /** Token ids with [CLS] … [SEP]. */
  ids: number[];
  /** Positions scored by the PLL (every non-special token). */
  positions: number[];
}

export interface Case {
  kind: Kind;
  /** Sentences per forward batch (pll: sentences whose masked copies share one batch). */
  batch: number;
  /** The sentences of each library call of one pass, as indices into `sentences`. */
  groups: number[][];
  /** The forward batches of one pass (pll: Dikē's same-length batches within each group; else the groups). */
  batches: number[][];
  /** Tokens counted for tokens/s in one pass. */
  tokens: number;
  warmup: number;
  repeats: number;
}

export interface ModelWorkload {
  name: string;
  /** Model directory (absolute, for the PyTorch side; never written to RESULTS.md). */
  dir: string;
  maskId: number;
  padId: number;
  sentences: Sentence[];
  cases: Case[];
}

export interface Checksum {
  sum: number;
  scale: number;
}

/** The positions whose logits enter the forward checksum, for a sentence of `len` tokens. */
export function checksumPositions(len: number): number[] {
  return [...new Set([0, 1, len - 1])];
}

/**
 * The first `count` non-empty lines of `file` whose encoding (special tokens included) has between
 * `minTokens` and `maxTokens` tokens. The tokenizer lowercases (BERT uncased), so the text is kept.
 */
export function pickSentences(file: string, tok: Tokenizer, count: number, minTokens: number, maxTokens: number): Sentence[] {
  const out: Sentence[] = [];
  for (const line of fs.readFileSync(file, 'utf8').split(/\r?\n/)) {
    const text = line.trim();
    if (text === '') continue;
    const { ids } = tok.encode(text);
    if (ids.length < minTokens || ids.length > maxTokens) continue;
    out.push({ text, ids, positions: nonSpecialPositions(ids, tok.specialIds) });
    if (out.length === count) return out;
  }
  throw new Error(`${file}: only ${out.length} lines with ${minTokens}–${maxTokens} tokens, ${count} wanted`);
}

/** Consecutive groups of `batch` sentences from the first `count`. */
export function makeCase(kind: Kind, sentences: readonly Sentence[], count: number, batch: number, warmup: number, repeats: number): Case {
  if (count > sentences.length) throw new Error(`${count} sentences wanted, ${sentences.length} available`);
  const groups: number[][] = [];
  for (let i = 0; i < count; i += batch) groups.push(Array.from({ length: Math.min(batch, count - i) }, (_, k) => i + k));
  // pll: the batches maskedTokenLogprobs forms from a group (its default token cap, as dikePass calls it).
  const batches =
    kind === 'pll' ? groups.flatMap((g) => maskedBuckets(g.map((i) => sentences[i]!), MASKED_MAX_TOKENS).map((b) => b.map((k) => g[k]!))) : groups;
  let tokens = 0;
  for (let i = 0; i < count; i++) tokens += kind === 'pll' ? sentences[i]!.positions.length : sentences[i]!.ids.length;
  return { kind, batch, groups, batches, tokens, warmup, repeats };
}

/**
 * Floating-point operations of one pass of a case on a BERT (multiply-add = 2), counted on the
 * batches as they run (padded rows included): per layer and token 8H² (Q, K, V, output) + 4HI (MLP)
 * + 4SH (scores and context over the padded length S); the head's 2H² + 2HV per projected row.
 * Embeddings, layer norms, softmax and GELU are left out (O(H) per token).
 */
export function caseFlops(c: Case, sentences: readonly Sentence[], shape: { hidden: number; intermediate: number; layers: number; vocab: number }): number {
  const { hidden: H, intermediate: I, layers: L, vocab: V } = shape;
  let flops = 0;
  for (const b of c.batches) {
    const S = Math.max(...b.map((i) => sentences[i]!.ids.length));
    const rows = c.kind === 'pll' ? b.reduce((a, i) => a + sentences[i]!.positions.length, 0) : b.length;
    const tokens = rows * S;
    const headRows = c.kind === 'forward' ? tokens : c.kind === 'forward-real' ? b.reduce((a, i) => a + sentences[i]!.ids.length, 0) : rows;
    flops += L * tokens * (8 * H * H + 4 * H * I + 4 * S * H) + headRows * (2 * H * H + 2 * H * V);
  }
  return flops;
}

export function writeWorkload(file: string, w: ModelWorkload): void {
  fs.writeFileSync(file, JSON.stringify(w));
}
