/**
 * A BERT-base-shaped BertForMaskedLM with seeded random weights, written as a Hugging Face
 * directory (config.json, model.safetensors in F32, and the small model's vocabulary files), so
 * the benchmark can time a realistically sized model without downloading one.
 *
 * Initialisation, close to HF's `_init_weights`: matrices and embeddings ~ N(0, 0.02), LayerNorm
 * weights 1. Biases (LayerNorm biases included) get small N(0, 0.02) values instead of HF's zeros,
 * so that the checksum comparison with PyTorch also exercises every bias.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fromFloat32, writeSafetensors, type RawTensor } from '../src/model/safetensors.js';

export interface RandomBertShape {
  hidden: number;
  layers: number;
  heads: number;
  intermediate: number;
  vocab: number;
  maxPositions: number;
  typeVocab: number;
}

export const BERT_BASE: RandomBertShape = {
  hidden: 768,
  layers: 12,
  heads: 12,
  intermediate: 3072,
  vocab: 30522,
  maxPositions: 512,
  typeVocab: 2,
};

/** Files of a WordPiece tokenizer directory that are copied next to the random weights. */
const TOKENIZER_FILES = ['vocab.txt', 'tokenizer_config.json', 'special_tokens_map.json'];

/**
 * Seeded normal deviates: a 32-bit xorshift generator (Marsaglia 2003) for uniforms, turned into
 * normals by the Box–Muller transform.
 */
class Gaussian {
  private state: number;
  private spare: number | undefined;

  constructor(seed: number) {
    this.state = seed >>> 0 || 0x9e3779b9;
  }

  private uniform(): number {
    let x = this.state;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.state = x >>> 0;
    // (0, 1]: never 0, so log() below is finite.
    return (this.state + 1) / 4294967296;
  }

  next(): number {
    if (this.spare !== undefined) {
      const s = this.spare;
      this.spare = undefined;
      return s;
    }
    const r = Math.sqrt(-2 * Math.log(this.uniform()));
    const theta = 2 * Math.PI * this.uniform();
    this.spare = r * Math.sin(theta);
    return r * Math.cos(theta);
  }

  fill(out: Float32Array, std: number): Float32Array {
    for (let i = 0; i < out.length; i++) out[i] = std * this.next();
    return out;
  }
}

function configJson(s: RandomBertShape, seed: number): Record<string, unknown> {
  return {
    architectures: ['BertForMaskedLM'],
    model_type: 'bert',
    hidden_size: s.hidden,
    num_hidden_layers: s.layers,
    num_attention_heads: s.heads,
    intermediate_size: s.intermediate,
    vocab_size: s.vocab,
    max_position_embeddings: s.maxPositions,
    type_vocab_size: s.typeVocab,
    hidden_act: 'gelu',
    layer_norm_eps: 1e-12,
    pad_token_id: 0,
    position_embedding_type: 'absolute',
    initializer_range: 0.02,
    torch_dtype: 'float32',
    // Not read by any model code: identifies the weights so a stale folder is regenerated.
    dike_bench_random_seed: seed,
  };
}

/** The tensors of a random BertForMaskedLM, in HF's name order (sorted). */
function randomTensors(s: RandomBertShape, seed: number): [string, RawTensor][] {
  const g = new Gaussian(seed);
  const tensors: [string, RawTensor][] = [];
  const normal = (name: string, shape: number[]): void => {
    const n = shape.reduce((a, b) => a * b, 1);
    tensors.push([name, fromFloat32(g.fill(new Float32Array(n), 0.02), shape, 'F32')]);
  };
  const ones = (name: string, n: number): void => {
    tensors.push([name, fromFloat32(new Float32Array(n).fill(1), [n], 'F32')]);
  };
  const linear = (prefix: string, out: number, inp: number): void => {
    normal(`${prefix}.weight`, [out, inp]);
    normal(`${prefix}.bias`, [out]);
  };
  const layerNorm = (prefix: string, n: number): void => {
    ones(`${prefix}.weight`, n);
    normal(`${prefix}.bias`, [n]);
  };
  const H = s.hidden;
  layerNorm('bert.embeddings.LayerNorm', H);
  normal('bert.embeddings.position_embeddings.weight', [s.maxPositions, H]);
  normal('bert.embeddings.token_type_embeddings.weight', [s.typeVocab, H]);
  normal('bert.embeddings.word_embeddings.weight', [s.vocab, H]);
  for (let l = 0; l < s.layers; l++) {
    const p = `bert.encoder.layer.${l}`;
    layerNorm(`${p}.attention.output.LayerNorm`, H);
    linear(`${p}.attention.output.dense`, H, H);
    linear(`${p}.attention.self.key`, H, H);
    linear(`${p}.attention.self.query`, H, H);
    linear(`${p}.attention.self.value`, H, H);
    linear(`${p}.intermediate.dense`, s.intermediate, H);
    layerNorm(`${p}.output.LayerNorm`, H);
    linear(`${p}.output.dense`, H, s.intermediate);
  }
  normal('cls.predictions.bias', [s.vocab]);
  layerNorm('cls.predictions.transform.LayerNorm', H);
  linear('cls.predictions.transform.dense', H, H);
  return tensors.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * Make `dir` hold the random model for (shape, seed), unless it already does.
 * Returns true when it wrote the weights.
 */
export function ensureRandomBert(dir: string, tokenizerDir: string, s: RandomBertShape = BERT_BASE, seed = 20240611): boolean {
  const config = configJson(s, seed);
  const configFile = path.join(dir, 'config.json');
  const weightsFile = path.join(dir, 'model.safetensors');
  const wanted = JSON.stringify(config, null, 2) + '\n';
  const upToDate =
    fs.existsSync(weightsFile) &&
    fs.existsSync(configFile) &&
    fs.readFileSync(configFile, 'utf8') === wanted &&
    TOKENIZER_FILES.every((f) => fs.existsSync(path.join(dir, f)));
  if (upToDate) return false;
  fs.mkdirSync(dir, { recursive: true });
  // The config goes last, so an interrupted run leaves a folder that is regenerated next time.
  fs.rmSync(configFile, { force: true });
  for (const f of TOKENIZER_FILES) fs.copyFileSync(path.join(tokenizerDir, f), path.join(dir, f));
  writeSafetensors(weightsFile, randomTensors(s, seed));
  fs.writeFileSync(configFile, wanted);
  return true;
}
