/** A plain, JSON-serialisable description of a checkpoint (what `dike inspect` prints). */
import type { Checkpoint } from './checkpoint.js';
import { parameterCount } from './checkpoint.js';
import type { ModelShape, Task } from './arch/types.js';

export interface ModelDescription {
  dir: string;
  architecture: string;
  family: string;
  task: Task;
  parameters: number;
  tensors: number;
  bytesOnDisk: number;
  bytesInMemory: number;
  /** Count of tensors per on-disk dtype. */
  dtypes: Record<string, number>;
  weightFiles: string[];
  tokenizer: string;
  shape: ModelShape;
}

export function describeModel(c: Checkpoint): ModelDescription {
  const dtypes: Record<string, number> = {};
  for (const p of c.params.values()) dtypes[p.dtype] = (dtypes[p.dtype] ?? 0) + 1;
  const parameters = parameterCount(c);
  return {
    dir: c.dir,
    architecture: c.hfClass,
    family: c.family.name,
    task: c.task,
    parameters,
    tensors: c.params.size,
    bytesOnDisk: c.bytesOnDisk,
    bytesInMemory: parameters * 4,
    dtypes,
    weightFiles: c.weightFiles,
    tokenizer: `${c.tokenizer.kind}, ${c.tokenizer.vocabSize} tokens`,
    shape: c.shape,
  };
}
