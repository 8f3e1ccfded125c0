/**
 * Llama (Touvron et al. 2023), as Hugging Face's LlamaForCausalLM.
 *
 *   h₀ = embed_tokens[ids]
 *   h  = h + o_proj(causal_attn(rope(q), rope(k), v))   on input_layernorm(h)  (RMSNorm)
 *   h  = h + down(silu(gate(x)) · up(x))                 on x = post_attention_layernorm(h)
 *   hidden[L] = norm(h)
 * Rotary embeddings (Su et al. 2021) in HF's rotate_half layout; grouped-query attention
 * (Ainslie et al. 2023) with query head h reading KV head ⌊h / (heads / kv_heads)⌋.
 * Mistral-style configs are the same graph (plus a sliding window, not yet supported).
 */
import type { GraphBuilder } from '../graph/build.js';
import type { ConfigReader } from '../config.js';
import type { BlockRange, Family, LinearInfo, Task } from './types.js';
import { ACTIVATIONS, type Activation, activation, attention, attentionBias, blockSpan, bodyInputs, flatten, hiddenInput, hiddenOutput, linear, rmsNorm } from './layers.js';

export interface LlamaConfig {
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  intermediate: number;
  vocab: number;
  maxPositions: number;
  eps: number;
  ropeTheta: number;
  act: Activation;
  attentionBias: boolean;
  mlpBias: boolean;
  tieWordEmbeddings: boolean;
}

function parseLlamaConfig(c: ConfigReader): LlamaConfig {
  const hidden = c.int('hidden_size');
  const heads = c.int('num_attention_heads');
  const kvHeads = c.int('num_key_value_heads', heads);
  c.divisible('num_attention_heads', heads, 'num_key_value_heads', kvHeads);
  const headDim = c.has('head_dim') ? c.int('head_dim') : hidden / heads;
  if (!Number.isInteger(headDim)) c.divisible('hidden_size', hidden, 'num_attention_heads', heads);
  if (headDim % 2 !== 0) c.divisible('head_dim', headDim, 'two (rotary pairs)', 2);
  c.absent('rope_scaling', 'rotary scaling variants (linear, dynamic, llama3, yarn) are not implemented');
  if (c.int('pretraining_tp', 1) !== 1) c.absent('pretraining_tp', 'pretraining_tp > 1');
  return {
    hidden,
    layers: c.int('num_hidden_layers'),
    heads,
    kvHeads,
    headDim,
    intermediate: c.int('intermediate_size'),
    vocab: c.int('vocab_size'),
    maxPositions: c.int('max_position_embeddings'),
    eps: c.num('rms_norm_eps', 1e-6),
    ropeTheta: c.num('rope_theta', 10000),
    act: c.oneOf('hidden_act', ACTIVATIONS, 'silu'),
    attentionBias: c.bool('attention_bias', false),
    mlpBias: c.bool('mlp_bias', false),
    tieWordEmbeddings: c.bool('tie_word_embeddings', false),
  };
}

/**
 * cos/sin tables [maxPositions, headDim] computed with float32 rounding at each step, as HF's
 * LlamaRotaryEmbedding does in float32: inv_freq = 1/θ^(2i/d); angle = pos·inv_freq; emb = [angle, angle].
 */
export function rotaryTables(headDim: number, maxPositions: number, theta: number): { cos: Float32Array; sin: Float32Array } {
  const f = Math.fround;
  const half = headDim / 2;
  const invFreq = Array.from({ length: half }, (_, i) => f(1 / f(Math.pow(theta, f(f(2 * i) / headDim)))));
  const cos = new Float32Array(maxPositions * headDim);
  const sin = new Float32Array(maxPositions * headDim);
  for (let p = 0; p < maxPositions; p++) {
    for (let i = 0; i < half; i++) {
      const angle = f(p * invFreq[i]!);
      const c = Math.cos(angle);
      const s = Math.sin(angle);
      cos[p * headDim + i] = c;
      cos[p * headDim + i + half] = c;
      sin[p * headDim + i] = s;
      sin[p * headDim + i + half] = s;
    }
  }
  return { cos, sin };
}

function llamaBody(b: GraphBuilder, cfg: LlamaConfig, blocks?: BlockRange): void {
  const inp = bodyInputs(b);
  const span = blockSpan(blocks, cfg.layers);
  const H = cfg.hidden;
  const qDim = cfg.heads * cfg.headDim;
  const kvDim = cfg.kvHeads * cfg.headDim;
  let x = span.from > 0 ? hiddenInput(b, H) : b.scoped('embeddings', () => flatten(b, b.gather(b.weight('model.embed_tokens.weight', [cfg.vocab, H]), inp.inputIds), H));
  if (span.emits(0)) hiddenOutput(b, inp, x, H, 0);
  const bias = attentionBias(b, inp, true);
  const tables = rotaryTables(cfg.headDim, cfg.maxPositions, cfg.ropeTheta);
  const cosAll = b.constant('float32', [cfg.maxPositions, cfg.headDim], tables.cos, 'rope_cos');
  const sinAll = b.constant('float32', [cfg.maxPositions, cfg.headDim], tables.sin, 'rope_sin');
  const rotary = { cos: b.gather(cosAll, inp.positions), sin: b.gather(sinAll, inp.positions) };
  for (let l = span.from; l < span.to; l++) {
    const p = `model.layers.${l}`;
    x = b.scoped(`layer.${l}`, () => {
      const h = rmsNorm(b, x, `${p}.input_layernorm`, H, cfg.eps);
      const q = linear(b, h, `${p}.self_attn.q_proj`, H, qDim, cfg.attentionBias);
      const k = linear(b, h, `${p}.self_attn.k_proj`, H, kvDim, cfg.attentionBias);
      const v = linear(b, h, `${p}.self_attn.v_proj`, H, kvDim, cfg.attentionBias);
      const ctx = attention(b, inp, q, k, v, bias, {
        numHeads: cfg.heads,
        numKvHeads: cfg.kvHeads,
        headDim: cfg.headDim,
        scaling: { multiply: Math.pow(cfg.headDim, -0.5) },
        rotary,
      });
      const a = b.add(x, linear(b, ctx, `${p}.self_attn.o_proj`, qDim, H, cfg.attentionBias));
      const m = rmsNorm(b, a, `${p}.post_attention_layernorm`, H, cfg.eps);
      const gate = activation(b, linear(b, m, `${p}.mlp.gate_proj`, H, cfg.intermediate, cfg.mlpBias), cfg.act);
      const up = linear(b, m, `${p}.mlp.up_proj`, H, cfg.intermediate, cfg.mlpBias);
      return b.add(a, linear(b, b.mul(gate, up), `${p}.mlp.down_proj`, cfg.intermediate, H, cfg.mlpBias));
    });
    if (l < cfg.layers - 1 && span.emits(l + 1)) hiddenOutput(b, inp, x, H, l + 1);
  }
  if (span.emits(cfg.layers)) hiddenOutput(b, inp, rmsNorm(b, x, 'model.norm', H, cfg.eps), H, cfg.layers);
}

function llamaHead(b: GraphBuilder, cfg: LlamaConfig, task: Task, rows: string): string {
  if (task !== 'causal-lm') throw new Error(`llama: no head for task ${task}`);
  const w = cfg.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight';
  return b.gemm(rows, b.weight(w, [cfg.vocab, cfg.hidden]), undefined, true);
}

function llamaLinears(cfg: LlamaConfig): LinearInfo[] {
  const H = cfg.hidden;
  const qDim = cfg.heads * cfg.headDim;
  const kvDim = cfg.kvHeads * cfg.headDim;
  // Sequential groups as GPTQModel's true_sequential: [k, v, q] [o] [up, gate] [down].
  const seqGroup: Record<string, number> = { q: 0, k: 0, v: 0, o: 1, gate: 2, up: 2, down: 3 };
  const lin = (prefix: string, inDim: number, outDim: number, layer: number, module: LinearInfo['module'], role: string, bias: boolean): LinearInfo => ({
    weight: `${prefix}.weight`, ...(bias ? { bias: `${prefix}.bias` } : {}), layout: 'out-in', inDim, outDim, layer, module, role, seqGroup: seqGroup[role]!,
  });
  const out: LinearInfo[] = [];
  for (let l = 0; l < cfg.layers; l++) {
    const p = `model.layers.${l}`;
    out.push(
      lin(`${p}.self_attn.q_proj`, H, qDim, l, 'attention', 'q', cfg.attentionBias),
      lin(`${p}.self_attn.k_proj`, H, kvDim, l, 'attention', 'k', cfg.attentionBias),
      lin(`${p}.self_attn.v_proj`, H, kvDim, l, 'attention', 'v', cfg.attentionBias),
      lin(`${p}.self_attn.o_proj`, qDim, H, l, 'attention', 'o', cfg.attentionBias),
      lin(`${p}.mlp.gate_proj`, H, cfg.intermediate, l, 'ffn', 'gate', cfg.mlpBias),
      lin(`${p}.mlp.up_proj`, H, cfg.intermediate, l, 'ffn', 'up', cfg.mlpBias),
      lin(`${p}.mlp.down_proj`, cfg.intermediate, H, l, 'ffn', 'down', cfg.mlpBias),
    );
  }
  // An untied lm_head is a linear map too, but vocabulary-sized: kept out of the default scope
  // like the embeddings (compressing it is a per-recipe choice).
  return out;
}

export const llama: Family<LlamaConfig> = {
  name: 'llama',
  modelTypes: ['llama'],
  classes: { LlamaForCausalLM: 'causal-lm' },
  reference: 'Touvron et al. 2023, LLaMA; Hugging Face transformers modeling_llama.py semantics',
  parseConfig: (c) => parseLlamaConfig(c),
  shape: (cfg) => ({
    hiddenSize: cfg.hidden,
    numLayers: cfg.layers,
    numHeads: cfg.heads,
    numKvHeads: cfg.kvHeads,
    headDim: cfg.headDim,
    intermediateSize: cfg.intermediate,
    vocabSize: cfg.vocab,
    maxPositions: cfg.maxPositions,
    outputSize: cfg.vocab,
  }),
  body: llamaBody,
  linears: llamaLinears,
  head: llamaHead,
};
