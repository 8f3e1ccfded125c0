/**
 * Models to train: initialised from scratch for a config (Hugging Face's `_init_weights`), or a
 * student made from a subset of a teacher's layers (DistilBERT, Sanh et al. 2019, §3: "initialize the
 * student from the teacher by taking one layer out of two").
 */
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import type { Checkpoint, Param } from '../model/checkpoint.js';
import { ConfigReader, readJsonObject } from '../model/config.js';
import { resolveArchitecture } from '../model/arch/registry.js';
import { GraphBuilder } from '../model/graph/build.js';
import { loadTokenizer } from '../model/tokenizer.js';
import { DikeError } from '../errors.js';
import { Rng } from '../util/rng.js';

export type TrainableModel = Omit<Checkpoint, 'bytesOnDisk'>;

/** Standard normal draws (Box–Muller) from the seeded generator. */
export function normal(rng: Rng, n: number, std: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = 1 - rng.next();
    const r = Math.sqrt(-2 * Math.log(u)) * std;
    const a = 2 * Math.PI * rng.next();
    out[i] = r * Math.cos(a);
    if (i + 1 < n) out[i + 1] = r * Math.sin(a);
  }
  return out;
}

/**
 * Hugging Face `_init_weights`: matrices and embeddings ~ N(0, initializer_range), biases 0, norm
 * weights 1; GPT-2 scales its residual projections (c_proj) by 1/√(2·n_layer) (Radford et al. 2019, §2.3);
 * the padding row of BERT's word embeddings is 0.
 */
function initialValue(name: string, shape: readonly number[], raw: Record<string, unknown>, family: string, rng: Rng): Float32Array {
  const n = shape.reduce((p, q) => p * q, 1);
  const std = typeof raw['initializer_range'] === 'number' ? raw['initializer_range'] : 0.02;
  if (shape.length === 1) return name.endsWith('.weight') ? new Float32Array(n).fill(1) : new Float32Array(n);
  const layers = Number(raw['n_layer'] ?? raw['num_hidden_layers'] ?? 1);
  const scaled = family === 'gpt2' && name.endsWith('c_proj.weight');
  const w = normal(rng, n, scaled ? std / Math.sqrt(2 * layers) : std);
  const pad = raw['pad_token_id'];
  if (family === 'bert' && name.endsWith('word_embeddings.weight') && typeof pad === 'number') w.fill(0, pad * shape[1]!, (pad + 1) * shape[1]!);
  return w;
}

/** A model with freshly initialised weights for `configFile`, using the tokenizer files in `tokenizerDir`. */
export function initFromConfig(configFile: string, tokenizerDir: string, seed: number): TrainableModel {
  const rawConfig = readJsonObject(configFile);
  const arch = resolveArchitecture(new ConfigReader(rawConfig, configFile));
  const rng = new Rng(seed);
  const params = new Map<string, Param>();
  const source = {
    file: configFile,
    get: (name: string) => params.get(name),
    create: (name: string, shape: readonly number[]) => {
      const p: Param = { shape: [...shape], data: initialValue(name, shape, rawConfig, arch.family.name, rng), dtype: 'F32', file: '(initialised)' };
      params.set(name, p);
      return p;
    },
  };
  // Building the graphs asks for every weight in forward order, which fixes the draw order.
  const b = new GraphBuilder('init', source);
  arch.family.body(b, arch.config);
  arch.family.head(b, arch.config, arch.task, b.input('rows', 'float32', ['n', arch.shape.hiddenSize]));
  const tokenizer = loadTokenizer(tokenizerDir);
  if (tokenizer.vocabSize > arch.shape.vocabSize) {
    throw new DikeError(configFile, '"vocab_size"', `${arch.shape.vocabSize} is smaller than the tokenizer's ${tokenizer.vocabSize} tokens (${tokenizerDir})`);
  }
  return { ...arch, dir: path.dirname(configFile), configFile, rawConfig, params, weightFiles: ['(initialised)'], tokenizer };
}

/** Config keys that hold the number of layers, by family. */
const LAYER_KEYS: Record<string, string> = { bert: 'num_hidden_layers', gpt2: 'n_layer', llama: 'num_hidden_layers' };
const LAYER_PARAM = /^(.*\.(?:layer|h|layers))\.(\d+)\.(.+)$/;

/** A student with the teacher's embeddings, head and the listed layers (renumbered 0..k-1). */
export function studentFromLayers(teacher: Checkpoint, layers: readonly number[]): TrainableModel {
  const L = teacher.shape.numLayers;
  for (const l of layers) {
    if (!Number.isInteger(l) || l < 0 || l >= L) throw new DikeError(teacher.dir, '--student', `layer ${l} is outside 0..${L - 1}`);
  }
  if (new Set(layers).size !== layers.length || layers.length === 0) throw new DikeError(teacher.dir, '--student', 'layers must be distinct and at least one');
  const key = LAYER_KEYS[teacher.family.name];
  if (key === undefined) throw new DikeError(teacher.dir, '--student', `no layer selection for ${teacher.family.name}`);
  const rawConfig = { ...teacher.rawConfig, [key]: layers.length };
  const params = new Map<string, Param>();
  for (const [name, p] of teacher.params) {
    const m = LAYER_PARAM.exec(name);
    if (m === null) params.set(name, { ...p, data: Float32Array.from(p.data) });
    else {
      const at = layers.indexOf(Number(m[2]));
      if (at >= 0) params.set(`${m[1]}.${at}.${m[3]}`, { ...p, data: Float32Array.from(p.data) });
    }
  }
  const arch = resolveArchitecture(new ConfigReader(rawConfig, teacher.configFile));
  return { ...arch, dir: teacher.dir, configFile: teacher.configFile, rawConfig, params, weightFiles: teacher.weightFiles, tokenizer: teacher.tokenizer };
}

/** Parse `--student`: a layer list ("0,2,4") or a config.json for a student trained from scratch. */
export function parseStudent(spec: string): { layers: number[] } | { configFile: string } {
  if (/^\d+(,\d+)*$/.test(spec)) return { layers: spec.split(',').map(Number) };
  if (!existsSync(spec)) throw new DikeError(spec, '--student', 'expected a layer list such as 0,2 or a config.json file; the file does not exist');
  readJsonObject(spec);
  return { configFile: spec };
}
