/**
 * GPT-2 (Radford et al. 2019), as Hugging Face's GPT2LMHeadModel.
 *
 * Pre-LN decoder:
 *   h₀ = wte[ids] + wpe[0..S-1]
 *   h  = h + c_proj(causal_attn(ln_1(h)))
 *   h  = h + mlp.c_proj(gelu_new(c_fc(ln_2(h))))
 *   hidden[L] = ln_f(h)   (HF's last hidden state is after the final norm)
 * LM head: hidden · wteᵀ (tied, no bias). Conv1D weights are stored [in, out].
 */
import type { GraphBuilder } from '../graph/build.js';
import type { ConfigReader } from '../config.js';
import type { BlockRange, Family, LinearInfo, Task } from './types.js';
import { ACTIVATIONS, type Activation, activation, attention, attentionBias, blockSpan, bodyInputs, conv1d, flatten, hiddenInput, hiddenOutput, layerNorm } from './layers.js';

export interface Gpt2Config {
  embd: number;
  layers: number;
  heads: number;
  inner: number;
  vocab: number;
  positions: number;
  eps: number;
  act: Activation;
  scaleAttnWeights: boolean;
  scaleByInverseLayerIdx: boolean;
  tieWordEmbeddings: boolean;
}

function parseGpt2Config(c: ConfigReader): Gpt2Config {
  const embd = c.int('n_embd');
  const heads = c.int('n_head');
  c.divisible('n_embd', embd, 'n_head', heads);
  // reorder_and_upcast_attn only matters for half-precision compute; Dikē computes in float32.
  if (c.bool('add_cross_attention', false)) c.absent('add_cross_attention', 'cross-attention (encoder-decoder GPT-2)');
  return {
    embd,
    layers: c.int('n_layer'),
    heads,
    inner: c.has('n_inner') ? c.int('n_inner') : 4 * embd,
    vocab: c.int('vocab_size'),
    positions: c.int('n_positions'),
    eps: c.num('layer_norm_epsilon', 1e-5),
    act: c.oneOf('activation_function', ACTIVATIONS, 'gelu_new'),
    scaleAttnWeights: c.bool('scale_attn_weights', true),
    scaleByInverseLayerIdx: c.bool('scale_attn_by_inverse_layer_idx', false),
    tieWordEmbeddings: c.bool('tie_word_embeddings', true),
  };
}

function gpt2Body(b: GraphBuilder, cfg: Gpt2Config, blocks?: BlockRange): void {
  const inp = bodyInputs(b);
  const span = blockSpan(blocks, cfg.layers);
  const H = cfg.embd;
  const headDim = H / cfg.heads;
  let x = span.from > 0 ? hiddenInput(b, H) : b.scoped('embeddings', () => {
    const tok = b.gather(b.weight('transformer.wte.weight', [cfg.vocab, H]), inp.inputIds);
    const pos = b.gather(b.weight('transformer.wpe.weight', [cfg.positions, H]), inp.positions);
    return flatten(b, b.add(tok, pos), H);
  });
  if (span.emits(0)) hiddenOutput(b, inp, x, H, 0);
  const bias = attentionBias(b, inp, true);
  for (let l = span.from; l < span.to; l++) {
    const p = `transformer.h.${l}`;
    x = b.scoped(`layer.${l}`, () => {
      const h = layerNorm(b, x, `${p}.ln_1`, H, cfg.eps);
      const qkv = conv1d(b, h, `${p}.attn.c_attn`, H, 3 * H);
      const q = b.slice(qkv, [0], [H], [1]);
      const k = b.slice(qkv, [H], [2 * H], [1]);
      const v = b.slice(qkv, [2 * H], [3 * H], [1]);
      // HF: weights / sqrt(d) [if scale_attn_weights], then / (layer_idx + 1) [if scale_attn_by_inverse_layer_idx].
      let divisor = cfg.scaleAttnWeights ? Math.sqrt(headDim) : 1;
      if (cfg.scaleByInverseLayerIdx) divisor *= l + 1;
      const ctx = attention(b, inp, q, k, v, bias, { numHeads: cfg.heads, numKvHeads: cfg.heads, headDim, scaling: { divide: divisor } });
      const a = b.add(x, conv1d(b, ctx, `${p}.attn.c_proj`, H, H));
      const m = conv1d(b, activation(b, conv1d(b, layerNorm(b, a, `${p}.ln_2`, H, cfg.eps), `${p}.mlp.c_fc`, H, cfg.inner), cfg.act), `${p}.mlp.c_proj`, cfg.inner, H);
      return b.add(a, m);
    });
    if (l < cfg.layers - 1 && span.emits(l + 1)) hiddenOutput(b, inp, x, H, l + 1);
  }
  if (span.emits(cfg.layers)) hiddenOutput(b, inp, layerNorm(b, x, 'transformer.ln_f', H, cfg.eps), H, cfg.layers);
}

function gpt2Head(b: GraphBuilder, cfg: Gpt2Config, task: Task, rows: string): string {
  if (task !== 'causal-lm') throw new Error(`gpt2: no head for task ${task}`);
  const w = cfg.tieWordEmbeddings ? 'transformer.wte.weight' : 'lm_head.weight';
  return b.gemm(rows, b.weight(w, [cfg.vocab, cfg.embd]), undefined, true);
}

function gpt2Linears(cfg: Gpt2Config): LinearInfo[] {
  const H = cfg.embd;
  // Sequential groups as GPTQModel's gpt2 layer_modules: [c_attn] [attn.c_proj] [c_fc] [mlp.c_proj].
  const seqGroup: Record<string, number> = { qkv: 0, o: 1, up: 2, down: 3 };
  const conv = (prefix: string, inDim: number, outDim: number, layer: number, module: LinearInfo['module'], role: string): LinearInfo => ({
    weight: `${prefix}.weight`, bias: `${prefix}.bias`, layout: 'in-out', inDim, outDim, layer, module, role, seqGroup: seqGroup[role]!,
  });
  return Array.from({ length: cfg.layers }, (_, l) => {
    const p = `transformer.h.${l}`;
    return [
      conv(`${p}.attn.c_attn`, H, 3 * H, l, 'attention', 'qkv'),
      conv(`${p}.attn.c_proj`, H, H, l, 'attention', 'o'),
      conv(`${p}.mlp.c_fc`, H, cfg.inner, l, 'ffn', 'up'),
      conv(`${p}.mlp.c_proj`, cfg.inner, H, l, 'ffn', 'down'),
    ];
  }).flat();
}

export const gpt2: Family<Gpt2Config> = {
  name: 'gpt2',
  modelTypes: ['gpt2'],
  classes: { GPT2LMHeadModel: 'causal-lm' },
  reference: 'Radford et al. 2019, GPT-2; Hugging Face transformers modeling_gpt2.py semantics',
  parseConfig: (c) => parseGpt2Config(c),
  shape: (cfg) => ({
    hiddenSize: cfg.embd,
    numLayers: cfg.layers,
    numHeads: cfg.heads,
    numKvHeads: cfg.heads,
    headDim: cfg.embd / cfg.heads,
    intermediateSize: cfg.inner,
    vocabSize: cfg.vocab,
    maxPositions: cfg.positions,
    outputSize: cfg.vocab,
  }),
  body: gpt2Body,
  linears: gpt2Linears,
  head: gpt2Head,
};
