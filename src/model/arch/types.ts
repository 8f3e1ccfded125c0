/**
 * An architecture family (BERT, GPT-2, Llama, …) is one declarative unit: how to read its config,
 * which Hugging Face classes it serves, and two graph functions, `body` and `head`.
 *
 *   body: input_ids [batch, seq] (int64), attention_mask [batch, seq] (int64)
 *         → hidden.0 … hidden.L [batch, seq, hidden]   (HF output_hidden_states order)
 *   head: rows [n, hidden] (chosen positions of the last hidden state) → logits [n, outputs]
 *
 * Splitting body and head is what lets scorers project onto the vocabulary only at the positions
 * they need (most of the cost of masked scoring is that projection).
 */
import type { GraphBuilder } from '../graph/build.js';
import type { ConfigReader } from '../config.js';

export type Task = 'masked-lm' | 'causal-lm' | 'sequence-classification';

/** Facts every caller needs, whatever the family. */
export interface ModelShape {
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  intermediateSize: number;
  vocabSize: number;
  maxPositions: number;
  /** Width of the head's output: vocabulary size for LMs, number of labels for classifiers. */
  outputSize: number;
  /** Classifier label names by index (from id2label), when the task is sequence-classification. */
  labels?: string[];
}

/** A weight matrix used as a linear map: what compression methods operate on. */
export interface LinearInfo {
  /** Hugging Face parameter name of the weight matrix. */
  weight: string;
  bias?: string;
  /** Storage layout: nn.Linear is [out, in]; GPT-2's Conv1D is [in, out]. */
  layout: 'out-in' | 'in-out';
  inDim: number;
  outDim: number;
  /** Transformer block index; -1 for heads outside the blocks. */
  layer: number;
  module: 'attention' | 'ffn' | 'head';
  /** Role within the module: q, k, v, qkv, o, up, gate, down, transform, pooler, classifier. */
  role: string;
  /**
   * Sequential-calibration group within the block (0, 1, …): in `calibration: sequential`, the maps
   * of group g are calibrated on inputs computed with groups < g of the block (and every earlier
   * block) already compressed; maps of one group read the same input or are independent
   * (GPTQModel's `true_sequential` layer_modules; Llama: [k,v,q] [o] [up,gate] [down]).
   */
  seqGroup: number;
}

/** Blocks [from, to) of the body (see Family.body). */
export interface BlockRange {
  from: number;
  to: number;
}

export interface Family<C> {
  /** Short name, e.g. "bert". */
  readonly name: string;
  /** `model_type` values in config.json this family reads. */
  readonly modelTypes: readonly string[];
  /** Hugging Face classes (config `architectures[0]`) and the task each one is. */
  readonly classes: Readonly<Record<string, Task>>;
  /** The paper / reference this implements, for the record. */
  readonly reference: string;
  parseConfig(cfg: ConfigReader, task: Task): C;
  shape(cfg: C, task: Task): ModelShape;
  /**
   * The body graph. With `blocks`, only blocks [from, to): when from > 0 the residual stream entering
   * block `from` comes in as input `hidden_in` [batch, seq, hidden] (input_ids and attention_mask
   * still give the shapes and the mask), and the only output is hidden.<to> (the residual stream
   * leaving block to − 1; after the final norm when to is the last block). Calibration runs the
   * model block by block this way (compress/calibrate.ts).
   */
  body(b: GraphBuilder, cfg: C, blocks?: BlockRange): void;
  /**
   * Every linear map of the body and head, in forward order, excluding embeddings and any matrix
   * tied to them (the LM decoder): the default scope of compression.
   */
  linears(cfg: C, task: Task): LinearInfo[];
  head(b: GraphBuilder, cfg: C, task: Task, rows: string): string;
}

// A family is generic in its config type; the registry stores them erased.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyFamily = Family<any>;
