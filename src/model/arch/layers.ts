/**
 * Building blocks shared by the architecture files: inputs, masks, linear layers, activations,
 * multi-head attention. Tensors in the residual stream are 2-D [tokens, hidden] (tokens = batch·seq)
 * so that every linear layer is a single Gemm against the stored weight.
 */
import type { GraphBuilder } from '../graph/build.js';
import type { BlockRange } from './types.js';

/** torch.finfo(torch.float32).min: HF's additive mask value. */
export const FLOAT32_MIN = -3.4028234663852886e38;

/** Names of the standard body inputs and some shape tensors derived from them. */
export interface BodyInputs {
  inputIds: string;
  attentionMask: string;
  /** int64 [2] = [batch, seq] */
  batchSeq: string;
  /** int64 scalar = seq */
  seqLen: string;
  /** int64 [seq] = 0 … seq-1 (positions are 0..S-1 in every row: right padding) */
  positions: string;
}

export function bodyInputs(b: GraphBuilder): BodyInputs {
  const inputIds = b.input('input_ids', 'int64', ['batch', 'seq']);
  const attentionMask = b.input('attention_mask', 'int64', ['batch', 'seq']);
  const batchSeq = b.shape(inputIds);
  const seqLen = b.squeeze(b.shape(inputIds, 1, 2), [0]);
  const positions = b.range(b.constant('int64', [], [0]), seqLen, b.constant('int64', [], [1]));
  return { inputIds, attentionMask, batchSeq, seqLen, positions };
}

/** Expose a 2-D [tokens, hidden] value as body output `hidden.<index>` of shape [batch, seq, hidden]. */
export function hiddenOutput(b: GraphBuilder, inp: BodyInputs, x: string, hidden: number, index: number): void {
  const shape3 = b.concat([inp.batchSeq, b.ints([hidden])], 0);
  b.output(b.reshape(x, shape3), `hidden.${index}`, 'float32', ['batch', 'seq', hidden]);
}

/**
 * Which blocks a body graph builds and which hidden states it outputs: every hidden.<i> for the whole
 * body (no range), only hidden.<to> for a range of blocks.
 */
export function blockSpan(blocks: BlockRange | undefined, layers: number): { from: number; to: number; emits(index: number): boolean } {
  const from = blocks?.from ?? 0;
  const to = blocks?.to ?? layers;
  if (!(Number.isInteger(from) && Number.isInteger(to) && 0 <= from && from <= to && to <= layers)) throw new Error(`body: block range [${from}, ${to}) outside [0, ${layers}]`);
  return { from, to, emits: (index) => blocks === undefined || index === to };
}

/** The residual stream entering a block range that does not start at the embeddings: input `hidden_in`. */
export function hiddenInput(b: GraphBuilder, hidden: number): string {
  return flatten(b, b.input('hidden_in', 'float32', ['batch', 'seq', hidden]), hidden);
}

/** [batch, seq, hidden] → [tokens, hidden] */
export function flatten(b: GraphBuilder, x: string, hidden: number): string {
  return b.reshape(x, b.ints([-1, hidden]));
}

/**
 * Additive attention bias, as HF builds it: 0 where a query may attend to a key, float32-min elsewhere.
 * Bidirectional (BERT): [batch, 1, 1, seq] = (1 − mask)·min.
 * Causal (GPT-2, Llama): [batch, 1, seq, seq], keys after the query or at padding get min.
 */
export function attentionBias(b: GraphBuilder, inp: BodyInputs, causal: boolean): string {
  if (!causal) {
    const m = b.cast(inp.attentionMask, 'float32');
    return b.unsqueeze(b.mul(b.sub(b.scalar(1), m), b.scalar(FLOAT32_MIN)), [1, 2]);
  }
  const keyIsReal = b.unsqueeze(b.cast(inp.attentionMask, 'bool'), [1, 2]); // [B,1,1,S]
  const query = b.unsqueeze(inp.positions, [1]); // [S,1]
  const key = b.unsqueeze(inp.positions, [0]); // [1,S]
  const allowed = b.and(b.lessOrEqual(key, query), keyIsReal); // [B,1,S,S]
  return b.where(allowed, b.scalar(0), b.scalar(FLOAT32_MIN));
}

/** nn.Linear: y = x·Wᵀ + b, W stored [out, in]. */
export function linear(b: GraphBuilder, x: string, prefix: string, inDim: number, outDim: number, bias = true): string {
  const w = b.weight(`${prefix}.weight`, [outDim, inDim]);
  const bb = bias ? b.weight(`${prefix}.bias`, [outDim]) : undefined;
  return b.gemm(x, w, bb, true);
}

/** GPT-2's Conv1D: y = x·W + b, W stored [in, out]. */
export function conv1d(b: GraphBuilder, x: string, prefix: string, inDim: number, outDim: number): string {
  return b.gemm(x, b.weight(`${prefix}.weight`, [inDim, outDim]), b.weight(`${prefix}.bias`, [outDim]), false);
}

export function layerNorm(b: GraphBuilder, x: string, prefix: string, dim: number, eps: number): string {
  return b.layerNorm(x, b.weight(`${prefix}.weight`, [dim]), b.weight(`${prefix}.bias`, [dim]), eps);
}

/** Llama RMSNorm: w · x / sqrt(mean(x²) + eps). */
export function rmsNorm(b: GraphBuilder, x: string, prefix: string, dim: number, eps: number): string {
  const meanSquare = b.reduceMean(b.mul(x, x), [-1]);
  const inv = b.reciprocal(b.sqrt(b.add(meanSquare, b.scalar(eps))));
  return b.mul(b.weight(`${prefix}.weight`, [dim]), b.mul(x, inv));
}

export type Activation = 'gelu' | 'gelu_new' | 'gelu_pytorch_tanh' | 'relu' | 'silu' | 'tanh';
export const ACTIVATIONS: readonly Activation[] = ['gelu', 'gelu_new', 'gelu_pytorch_tanh', 'relu', 'silu', 'tanh'];

export function activation(b: GraphBuilder, x: string, act: Activation): string {
  switch (act) {
    case 'gelu': // exact GELU: 0.5·x·(1 + erf(x/√2))
      return b.mul(b.mul(x, b.scalar(0.5)), b.add(b.scalar(1), b.erf(b.div(x, b.scalar(Math.SQRT2)))));
    case 'gelu_new':
    case 'gelu_pytorch_tanh': {
      // tanh approximation (Hendrycks & Gimpel 2016): 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
      const cube = b.mul(b.mul(x, x), x);
      const inner = b.mul(b.scalar(Math.sqrt(2 / Math.PI)), b.add(x, b.mul(b.scalar(0.044715), cube)));
      return b.mul(b.mul(b.scalar(0.5), x), b.add(b.scalar(1), b.tanh(inner)));
    }
    case 'relu':
      return b.node('Relu', [x])[0]!;
    case 'silu':
      return b.mul(x, b.sigmoid(x));
    case 'tanh':
      return b.tanh(x);
  }
}

export interface AttentionSpec {
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  /**
   * How scores are scaled, written as HF writes it: BERT and GPT-2 divide by √head_dim
   * ({ divide: √d }), Llama multiplies by head_dim^-0.5 ({ multiply: d^-0.5 }).
   */
  scaling: { divide: number } | { multiply: number };
  /** Rotary cos/sin tables gathered at the positions: [seq, headDim] each. */
  rotary?: { cos: string; sin: string };
}

/** [tokens, heads·headDim] → [batch, heads, seq, headDim] */
function splitHeads(b: GraphBuilder, inp: BodyInputs, x: string, heads: number, headDim: number): string {
  const shape4 = b.concat([inp.batchSeq, b.ints([heads, headDim])], 0);
  return b.transpose(b.reshape(x, shape4), [0, 2, 1, 3]);
}

/** HF rotate_half convention: x·cos + cat(−x[d/2:], x[:d/2])·sin. */
export function applyRotary(b: GraphBuilder, x: string, headDim: number, cos: string, sin: string): string {
  const half = headDim / 2;
  const x1 = b.slice(x, [0], [half], [3]);
  const x2 = b.slice(x, [half], [headDim], [3]);
  const rotated = b.concat([b.neg(x2), x1], 3);
  return b.add(b.mul(x, cos), b.mul(rotated, sin));
}

/**
 * Scaled dot-product attention over 2-D projections; returns the context as [tokens, heads·headDim].
 * Grouped-query attention: query head h reads KV head ⌊h / (heads / kvHeads)⌋ (HF repeat_kv).
 */
export function attention(
  b: GraphBuilder,
  inp: BodyInputs,
  q2: string,
  k2: string,
  v2: string,
  bias: string,
  spec: AttentionSpec,
): string {
  const { numHeads, numKvHeads, headDim } = spec;
  let q = splitHeads(b, inp, q2, numHeads, headDim);
  let k = splitHeads(b, inp, k2, numKvHeads, headDim);
  let v = splitHeads(b, inp, v2, numKvHeads, headDim);
  if (spec.rotary) {
    q = applyRotary(b, q, headDim, spec.rotary.cos, spec.rotary.sin);
    k = applyRotary(b, k, headDim, spec.rotary.cos, spec.rotary.sin);
  }
  if (numKvHeads !== numHeads) {
    const rep = numHeads / numKvHeads;
    const repeat = (t: string): string => {
      // [B, kv, S, d] → [B, kv, rep, S, d] → [B, kv·rep, S, d]
      const batch = b.slice(inp.batchSeq, [0], [1], [0]);
      const seq = b.slice(inp.batchSeq, [1], [2], [0]);
      const expanded = b.expand(b.unsqueeze(t, [2]), b.concat([batch, b.ints([numKvHeads, rep]), seq, b.ints([headDim])], 0));
      return b.reshape(expanded, b.concat([batch, b.ints([numHeads]), seq, b.ints([headDim])], 0));
    };
    k = repeat(k);
    v = repeat(v);
  }
  let scores = b.matmul(q, b.transpose(k, [0, 1, 3, 2]));
  scores = 'divide' in spec.scaling ? b.div(scores, b.scalar(spec.scaling.divide)) : b.mul(scores, b.scalar(spec.scaling.multiply));
  const probs = b.softmax(b.add(scores, bias), -1);
  const ctx = b.transpose(b.matmul(probs, v), [0, 2, 1, 3]); // [B, S, heads, d]
  return b.reshape(ctx, b.ints([-1, numHeads * headDim]));
}
