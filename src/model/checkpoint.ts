/**
 * A Hugging Face checkpoint directory → Checkpoint: parsed config, float32 parameters by HF name,
 * and the tokenizer. Weights come from `model.safetensors` or a sharded set listed in
 * `model.safetensors.index.json`. Pickle files are refused, never opened.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DikeError } from '../errors.js';
import { ConfigReader, readJsonObject } from './config.js';
import { readSafetensorsFloat32, toFloat32, type DType, type RawTensor } from './safetensors.js';
import { resolveArchitecture, type ResolvedArchitecture } from './arch/registry.js';
import { loadTokenizer, type Tokenizer } from './tokenizer.js';
import { GraphBuilder, type WeightSource } from './graph/build.js';

export interface Param {
  shape: number[];
  /** float32 values (F16/BF16 files are upcast exactly). */
  data: Float32Array;
  /** dtype as stored on disk. */
  dtype: DType;
  /** the weights file it came from. */
  file: string;
}

export interface Checkpoint extends ResolvedArchitecture {
  dir: string;
  configFile: string;
  rawConfig: Record<string, unknown>;
  params: Map<string, Param>;
  /** Weight files read, in order. */
  weightFiles: string[];
  /** Total bytes of tensor data on disk. */
  bytesOnDisk: number;
  tokenizer: Tokenizer;
}

const PICKLE_NAMES = ['pytorch_model.bin', 'pytorch_model.bin.index.json', 'tf_model.h5', 'flax_model.msgpack'];

function pickleRefusal(dir: string): DikeError | undefined {
  let names: string[] = [];
  try {
    names = readdirSync(dir);
  } catch {
    return undefined;
  }
  const found = names.find((n) => PICKLE_NAMES.includes(n) || /\.(bin|pt|pth|ckpt|pkl)$/.test(n));
  if (found === undefined) return undefined;
  return new DikeError(
    join(dir, found),
    '',
    'no model.safetensors here, and pickle/framework checkpoints are never loaded (they can run code); convert once with ' +
      "`python -c \"from transformers import AutoModel as M; M.from_pretrained('DIR').save_pretrained('DIR', safe_serialization=True)\"`",
  );
}

/** The weight files of a checkpoint directory (single or sharded). */
export function weightFilesOf(dir: string): { files: string[]; index?: { file: string; weightMap: Map<string, string> } } {
  const single = join(dir, 'model.safetensors');
  const indexFile = join(dir, 'model.safetensors.index.json');
  if (existsSync(single)) return { files: [single] };
  if (existsSync(indexFile)) {
    const idx = readJsonObject(indexFile);
    const wm = idx['weight_map'];
    if (typeof wm !== 'object' || wm === null || Array.isArray(wm)) {
      throw new DikeError(indexFile, '"weight_map"', 'missing or not an object of tensor name → shard file');
    }
    const weightMap = new Map<string, string>();
    for (const [name, shard] of Object.entries(wm)) {
      if (typeof shard !== 'string' || shard.includes('/') || shard.includes('\\') || !shard.endsWith('.safetensors')) {
        throw new DikeError(indexFile, `"weight_map"."${name}"`, `expected a .safetensors file name in this directory, found ${JSON.stringify(shard)}`);
      }
      weightMap.set(name, shard);
    }
    const files = [...new Set(weightMap.values())].map((s) => join(dir, s));
    for (const f of files) if (!existsSync(f)) throw new DikeError(indexFile, '"weight_map"', `shard ${f} is listed but missing`);
    return { files, index: { file: indexFile, weightMap } };
  }
  throw pickleRefusal(dir) ?? new DikeError(dir, '', 'no weights: expected model.safetensors or model.safetensors.index.json');
}

/**
 * Read all parameters as float32, checking a sharded index against the shards' contents. Each
 * tensor is read straight into its own Float32Array (never the whole file and a converted copy at
 * once), so the parameters own their data: editing one never touches another or a shared buffer.
 */
export function readParams(dir: string): { params: Map<string, Param>; files: string[]; bytes: number } {
  const { files, index } = weightFilesOf(dir);
  const params = new Map<string, Param>();
  let bytes = 0;
  for (const file of files) {
    readSafetensorsFloat32(file, (name, t, stored) => {
      if (params.has(name)) throw new DikeError(file, `tensor "${name}"`, `also stored in ${params.get(name)!.file}`);
      if (index) {
        const listed = index.weightMap.get(name);
        if (listed === undefined || join(dir, listed) !== file) {
          throw new DikeError(file, `tensor "${name}"`, `not listed for this shard in ${index.file}`);
        }
      }
      bytes += stored.end - stored.begin;
      checkFinite(file, name, t.data);
      params.set(name, { shape: t.shape, data: t.data, dtype: t.dtype, file });
    });
  }
  if (index) {
    for (const [name, shard] of index.weightMap) {
      if (!params.has(name)) throw new DikeError(join(dir, shard), `tensor "${name}"`, `listed in ${index.file} but not in the shard`);
    }
  }
  return { params, files, bytes };
}

/** One stored tensor as a parameter: float32, and finite (refused at load otherwise, naming the tensor). */
export function tensorParam(file: string, name: string, t: RawTensor): Param {
  const data = toFloat32(t);
  checkFinite(file, name, data);
  return { shape: t.shape, data, dtype: t.dtype, file };
}

/** NaN or ±Inf in a weight makes every score NaN without an error: refuse it at load, naming the tensor. */
function checkFinite(file: string, name: string, data: Float32Array): void {
  for (let i = 0; i < data.length; i++) {
    const x = data[i]!;
    if (x - x !== 0) {
      throw new DikeError(file, `tensor "${name}"`, `holds ${Number.isNaN(x) ? 'NaN' : x > 0 ? '+Inf' : '-Inf'} at flat index ${i} (weights must be finite)`);
    }
  }
}

/**
 * Checks every command shares (inspect as much as logprobs): every weight the architecture needs is
 * present with the shape the config implies (the graph is built once, no runtime involved), and the
 * tokenizer's ids all index the embedding.
 */
export function validateCheckpoint(ckpt: Checkpoint): void {
  const b = new GraphBuilder('check', weightSource(ckpt));
  ckpt.family.body(b, ckpt.config);
  ckpt.family.head(b, ckpt.config, ckpt.task, b.input('rows', 'float32', ['n', ckpt.shape.hiddenSize]));
  const tok = ckpt.tokenizer;
  if (tok.maxId >= ckpt.shape.vocabSize) {
    throw new DikeError(
      tok.file,
      `token ${JSON.stringify(tok.idToToken(tok.maxId) ?? '?')}`,
      `id ${tok.maxId} is outside the model's vocabulary: ${ckpt.configFile} has vocab_size ${ckpt.shape.vocabSize} (the tokenizer does not belong to this model)`,
    );
  }
}

export function loadCheckpoint(dir: string): Checkpoint {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new DikeError(dir, '', 'model directory not found');
  const configFile = join(dir, 'config.json');
  const rawConfig = readJsonObject(configFile);
  const arch = resolveArchitecture(new ConfigReader(rawConfig, configFile));
  const tokenizer = loadTokenizer(dir);
  const { params, files, bytes } = readParams(dir);
  const ckpt: Checkpoint = { ...arch, dir, configFile, rawConfig, params, weightFiles: files, bytesOnDisk: bytes, tokenizer };
  validateCheckpoint(ckpt);
  return ckpt;
}

export function weightSource(ckpt: Pick<Checkpoint, 'params' | 'dir' | 'weightFiles'>): WeightSource {
  const file = ckpt.weightFiles.length === 1 ? ckpt.weightFiles[0]! : ckpt.dir;
  return { file, get: (name) => ckpt.params.get(name) };
}

/** Number of scalar parameters (tied weights counted once, as stored). */
export function parameterCount(ckpt: Pick<Checkpoint, 'params'>): number {
  let n = 0;
  for (const p of ckpt.params.values()) n += p.data.length;
  return n;
}
