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
  return { family, hfClass, task, config, shape: family.shape(config, task) };
}
