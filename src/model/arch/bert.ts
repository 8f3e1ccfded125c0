/**
 * BERT (Devlin et al. 2019), as Hugging Face's BertForMaskedLM / BertForSequenceClassification.
 *
 * Post-LN encoder:
 *   h₀ = LN(word[ids] + token_type[0] + position[0..S-1])
 *   a  = LN(dense(attn(h)) + h)
 *   h' = LN(dense₂(act(dense₁(a))) + a)
 * MLM head: LN(act(dense(h))) · word_embeddingsᵀ + cls.predictions.bias (decoder tied to the input embeddings).
 * Classifier: tanh(pooler(h[CLS])) → classifier.
 *
 * Parameter names are parameterised by `BertNames` so that RoBERTa-style checkpoints (other prefixes,
 * position offset) are a small variant of this file rather than a copy of it.
 */
import type { GraphBuilder } from '../graph/build.js';
import type { ConfigReader } from '../config.js';
import type { BlockRange, Family, LinearInfo, ModelShape, Task } from './types.js';
import { ACTIVATIONS, type Activation, activation, attention, attentionBias, blockSpan, bodyInputs, flatten, hiddenInput, hiddenOutput, layerNorm, linear } from './layers.js';

export interface BertConfig {
  hidden: number;
  layers: number;
  heads: number;
  intermediate: number;
  vocab: number;
  maxPositions: number;
  typeVocab: number;
  eps: number;
  act: Activation;
  tieWordEmbeddings: boolean;
  numLabels: number;
  labels: string[];
}

export interface BertNames {
  /** Prefix of the encoder: "bert" (RoBERTa: "roberta"). */
  base: string;
  /** Prefix of the MLM head: "cls.predictions" (RoBERTa: "lm_head"). */
  mlmHead: string;
}

const BERT_NAMES: BertNames = { base: 'bert', mlmHead: 'cls.predictions' };

export function parseBertConfig(c: ConfigReader, task: Task): BertConfig {
  const hidden = c.int('hidden_size');
  const heads = c.int('num_attention_heads');
  c.divisible('hidden_size', hidden, 'num_attention_heads', heads);
  const posType = c.str('position_embedding_type', 'absolute');
  if (posType !== 'absolute') c.oneOf('position_embedding_type', ['absolute']);
  let labels: string[] = [];
  let numLabels = 0;
  if (task === 'sequence-classification') {
    const id2label = c.raw['id2label'];
    numLabels = c.has('num_labels') ? c.int('num_labels', undefined, 1 << 16) : id2label && typeof id2label === 'object' ? Object.keys(id2label).length : 2;
    labels = Array.from({ length: numLabels }, (_, i) => {
      const l = id2label && typeof id2label === 'object' ? (id2label as Record<string, unknown>)[String(i)] : undefined;
      return typeof l === 'string' ? l : `LABEL_${i}`;
    });
    const problem = c.str('problem_type', 'single_label_classification');
    if (problem !== 'single_label_classification' && problem !== 'multi_label_classification') {
      c.oneOf('problem_type', ['single_label_classification', 'multi_label_classification']);
    }
  }
  return {
    hidden,
    layers: c.int('num_hidden_layers'),
    heads,
    intermediate: c.int('intermediate_size'),
    vocab: c.int('vocab_size'),
    maxPositions: c.int('max_position_embeddings'),
    typeVocab: c.int('type_vocab_size', 2),
    eps: c.num('layer_norm_eps', 1e-12),
    act: c.oneOf('hidden_act', ACTIVATIONS, 'gelu'),
    tieWordEmbeddings: c.bool('tie_word_embeddings', true),
    numLabels,
    labels,
  };
}

export function bertBody(b: GraphBuilder, cfg: BertConfig, names: BertNames = BERT_NAMES, positionOffset = 0, blocks?: BlockRange): void {
  const inp = bodyInputs(b);
  const span = blockSpan(blocks, cfg.layers);
  const H = cfg.hidden;
  const emb = `${names.base}.embeddings`;
  let x = span.from > 0 ? hiddenInput(b, H) : b.scoped('embeddings', () => {
    const words = b.gather(b.weight(`${emb}.word_embeddings.weight`, [cfg.vocab, H]), inp.inputIds);
    // token_type_ids are all 0 (single sentences), as HF defaults them.
    const tokenType = b.slice(b.weight(`${emb}.token_type_embeddings.weight`, [cfg.typeVocab, H]), [0], [1], [0]);
    const pos = positionOffset === 0 ? inp.positions : b.add(inp.positions, b.constant('int64', [], [positionOffset]));
    const position = b.gather(b.weight(`${emb}.position_embeddings.weight`, [cfg.maxPositions, H]), pos);
    return flatten(b, layerNorm(b, b.add(b.add(words, tokenType), position), `${emb}.LayerNorm`, H, cfg.eps), H);
  });
  if (span.emits(0)) hiddenOutput(b, inp, x, H, 0);
  const bias = attentionBias(b, inp, false);
  const headDim = H / cfg.heads;
  for (let l = span.from; l < span.to; l++) {
    const p = `${names.base}.encoder.layer.${l}`;
    x = b.scoped(`layer.${l}`, () => {
      const q = linear(b, x, `${p}.attention.self.query`, H, H);
      const k = linear(b, x, `${p}.attention.self.key`, H, H);
      const v = linear(b, x, `${p}.attention.self.value`, H, H);
      const ctx = attention(b, inp, q, k, v, bias, {
        numHeads: cfg.heads,
        numKvHeads: cfg.heads,
        headDim,
        scaling: { divide: Math.sqrt(headDim) },
      });
      const attnOut = linear(b, ctx, `${p}.attention.output.dense`, H, H);
      const a = layerNorm(b, b.add(attnOut, x), `${p}.attention.output.LayerNorm`, H, cfg.eps);
      const inter = activation(b, linear(b, a, `${p}.intermediate.dense`, H, cfg.intermediate), cfg.act);
      const out = linear(b, inter, `${p}.output.dense`, cfg.intermediate, H);
      return layerNorm(b, b.add(out, a), `${p}.output.LayerNorm`, H, cfg.eps);
    });
    if (span.emits(l + 1)) hiddenOutput(b, inp, x, H, l + 1);
  }
}

export function bertHead(b: GraphBuilder, cfg: BertConfig, task: Task, rows: string, names: BertNames = BERT_NAMES): string {
  const H = cfg.hidden;
  if (task === 'masked-lm') {
    const p = names.mlmHead;
    const t = activation(b, linear(b, rows, `${p}.transform.dense`, H, H), cfg.act);
    const n = layerNorm(b, t, `${p}.transform.LayerNorm`, H, cfg.eps);
    // The decoder is tied to the input embeddings (HF ties it unless tie_word_embeddings is false).
    const decoder = cfg.tieWordEmbeddings ? `${names.base}.embeddings.word_embeddings.weight` : `${p}.decoder.weight`;
    return b.gemm(n, b.weight(decoder, [cfg.vocab, H]), b.weight(`${p}.bias`, [cfg.vocab]), true);
  }
  if (task === 'sequence-classification') {
    const pooled = b.tanh(linear(b, rows, `${names.base}.pooler.dense`, H, H));
    return linear(b, pooled, 'classifier', H, cfg.numLabels);
  }
  throw new Error(`bert: no head for task ${task}`);
}

export function bertLinears(cfg: BertConfig, task: Task, names: BertNames = BERT_NAMES): LinearInfo[] {
  const H = cfg.hidden;
  // Sequential groups, as GPTQModel's true_sequential for its encoder models: [query, key, value]
  // [attention.output.dense] [intermediate.dense] [output.dense]; in the heads, pooler before classifier.
  const seqGroup: Record<string, number> = { q: 0, k: 0, v: 0, o: 1, up: 2, down: 3, transform: 0, pooler: 0, classifier: 1 };
  const lin = (prefix: string, inDim: number, outDim: number, layer: number, module: LinearInfo['module'], role: string): LinearInfo => ({
    weight: `${prefix}.weight`, bias: `${prefix}.bias`, layout: 'out-in', inDim, outDim, layer, module, role, seqGroup: seqGroup[role]!,
  });
  const out: LinearInfo[] = [];
  for (let l = 0; l < cfg.layers; l++) {
    const p = `${names.base}.encoder.layer.${l}`;
    out.push(
      lin(`${p}.attention.self.query`, H, H, l, 'attention', 'q'),
      lin(`${p}.attention.self.key`, H, H, l, 'attention', 'k'),
      lin(`${p}.attention.self.value`, H, H, l, 'attention', 'v'),
      lin(`${p}.attention.output.dense`, H, H, l, 'attention', 'o'),
      lin(`${p}.intermediate.dense`, H, cfg.intermediate, l, 'ffn', 'up'),
      lin(`${p}.output.dense`, cfg.intermediate, H, l, 'ffn', 'down'),
    );
  }
  if (task === 'masked-lm') out.push(lin(`${names.mlmHead}.transform.dense`, H, H, -1, 'head', 'transform'));
  if (task === 'sequence-classification') {
    out.push(lin(`${names.base}.pooler.dense`, H, H, -1, 'head', 'pooler'), lin('classifier', H, cfg.numLabels, -1, 'head', 'classifier'));
  }
  return out;
}

export function bertShape(cfg: BertConfig, task: Task): ModelShape {
  return {
    hiddenSize: cfg.hidden,
    numLayers: cfg.layers,
    numHeads: cfg.heads,
    numKvHeads: cfg.heads,
    headDim: cfg.hidden / cfg.heads,
    intermediateSize: cfg.intermediate,
    vocabSize: cfg.vocab,
    maxPositions: cfg.maxPositions,
    outputSize: task === 'sequence-classification' ? cfg.numLabels : cfg.vocab,
    ...(task === 'sequence-classification' ? { labels: cfg.labels } : {}),
  };
}

export const bert: Family<BertConfig> = {
  name: 'bert',
  modelTypes: ['bert'],
  classes: { BertForMaskedLM: 'masked-lm', BertForSequenceClassification: 'sequence-classification' },
  reference: 'Devlin et al. 2019, BERT; Hugging Face transformers modeling_bert.py semantics',
  parseConfig: parseBertConfig,
  shape: bertShape,
  body: (b, cfg, blocks) => bertBody(b, cfg, BERT_NAMES, 0, blocks),
  linears: (cfg, task) => bertLinears(cfg, task),
  head: (b, cfg, task, rows) => bertHead(b, cfg, task, rows),
};
