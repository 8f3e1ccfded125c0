/**
 * The one place architecture families are registered. Adding RoBERTa, DistilBERT or Mistral is
 * one file plus one line here.
 */
import { ConfigReader } from '../config.js';
import { DikeError } from '../../errors.js';
import type { AnyFamily, ModelShape, Task } from './types.js';
import { bert } from './bert.js';
import { gpt2 } from './gpt2.js';
import { llama } from './llama.js';

export const FAMILIES: readonly AnyFamily[] = [bert, gpt2, llama];

export interface ResolvedArchitecture {
  family: AnyFamily;
  hfClass: string;
  task: Task;
  /** The family's typed config. */
  config: unknown;
  shape: ModelShape;
}

export function supportedClasses(): string[] {
  return FAMILIES.flatMap((f) => Object.keys(f.classes));
}

/** Find the family and task for a config.json, and parse its config. */
export function resolveArchitecture(c: ConfigReader): ResolvedArchitecture {
  const archs = c.raw['architectures'];
  if (!Array.isArray(archs) || archs.length === 0 || typeof archs[0] !== 'string') {
    throw new DikeError(c.file, '"architectures"', `missing or not a list of class names (supported: ${supportedClasses().join(', ')})`);
  }
  const hfClass = archs[0];
  const family = FAMILIES.find((f) => hfClass in f.classes);
  if (family === undefined) {
    throw new DikeError(c.file, '"architectures"', `unsupported architecture ${hfClass} (supported: ${supportedClasses().join(', ')})`);
  }
  const modelType = c.str('model_type', family.modelTypes[0]);
  if (!family.modelTypes.includes(modelType)) {
    throw new DikeError(c.file, '"model_type"', `"${modelType}" does not match architecture ${hfClass} (expected ${family.modelTypes.join(' or ')})`);
  }
  const task = family.classes[hfClass]!;
  const config: unknown = family.parseConfig(c, task);
  const shape = family.shape(config, task);
  checkConfigValues(c, shape.vocabSize);
  return { family, hfClass, task, config, shape };
}

/** Normalisation epsilons: a zero or negative one gives NaN or nonsense, never an error, downstream. */
const EPS_KEYS = ['layer_norm_eps', 'layer_norm_epsilon', 'rms_norm_eps'];
/** Token ids a config may carry; each indexes the embedding, so it must lie in [0, vocab_size). */
const TOKEN_ID_KEYS = ['bos_token_id', 'eos_token_id', 'pad_token_id', 'sep_token_id', 'cls_token_id', 'mask_token_id', 'unk_token_id', 'decoder_start_token_id'];

/** Values the families read leniently (or not at all) but that every command depends on. */
function checkConfigValues(c: ConfigReader, vocabSize: number): void {
  for (const key of EPS_KEYS) {
    const v = c.raw[key];
    if (v === undefined || v === null) continue;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new DikeError(c.file, `"${key}"`, `expected a positive number, found ${JSON.stringify(v)}`);
  }
  for (const key of TOKEN_ID_KEYS) {
    const v = c.raw[key];
    if (v === undefined || v === null) continue;
    // Old Llama configs write pad_token_id: -1 for "none".
    const lowest = key === 'pad_token_id' ? -1 : 0;
    for (const id of Array.isArray(v) ? v : [v]) {
      if (typeof id !== 'number' || !Number.isInteger(id) || id < lowest || id >= vocabSize) {
        throw new DikeError(c.file, `"${key}"`, `expected an integer token id from ${lowest} to ${vocabSize - 1} (vocab_size ${vocabSize}), found ${JSON.stringify(v)}`);
      }
    }
  }
}
