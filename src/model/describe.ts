/** A plain, JSON-serialisable description of a checkpoint (what `dike inspect` prints). */
import type { Checkpoint } from './checkpoint.js';
import { parameterCount } from './checkpoint.js';
import type { ModelShape, Task } from './arch/types.js';

/** A linear map's weight: stored shape, exact-zero fraction, and its integer form when quantized. */
export interface MatrixDescription {
  name: string;
  shape: number[];
  sparsity: number;
  bits?: number;
  groupSize?: number;
}

/** What describe needs to know of a quantized matrix (a QuantState has these fields). */
export interface QuantizedInfo {
  bits: number;
  groupSize: number;
  symmetric: boolean;
  rows: number;
  cols: number;
}

/** The integer forms of a compressed model (quantization.safetensors), as the caller read them. */
export interface QuantizationSource {
  file: string;
  /** Size of the file on disk. */
  bytes: number;
  matrices: ReadonlyMap<string, QuantizedInfo>;
}

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
  /** The linear maps (compression's targets), in forward order. */
  matrices: MatrixDescription[];
  /** Exact-zero fraction over all of them. */
  sparsity: number;
  /**
   * When the model has quantized matrices: their file, and the weights' size in memory when
   * deployed (integer codes bit-packed with their scales and zero points; everything else float32).
   */
  quantization?: { file: string; bytesOnDisk: number; matrices: number; bytesDeployed: number };
}

/** Bytes of an integer form: codes packed at `bits` per weight (rows padded to whole bytes), float32 scales, packed zero points. */
export function quantizedBytes(q: QuantizedInfo): number {
  const groups = Math.ceil(q.cols / q.groupSize);
  return q.rows * (Math.ceil((q.cols * q.bits) / 8) + 4 * groups + (q.symmetric ? 0 : Math.ceil((groups * q.bits) / 8)));
}

export function describeModel(c: Checkpoint, quantization?: QuantizationSource): ModelDescription {
  const dtypes: Record<string, number> = {};
  for (const p of c.params.values()) dtypes[p.dtype] = (dtypes[p.dtype] ?? 0) + 1;
  const parameters = parameterCount(c);
  let zeros = 0;
  let total = 0;
  const matrices: MatrixDescription[] = c.family.linears(c.config, c.task).flatMap((l) => {
    const p = c.params.get(l.weight);
    if (p === undefined) return [];
    let z = 0;
    for (let i = 0; i < p.data.length; i++) if (p.data[i] === 0) z++;
    zeros += z;
    total += p.data.length;
    const q = quantization?.matrices.get(l.weight);
    return [{ name: l.weight, shape: [...p.shape], sparsity: p.data.length === 0 ? 0 : z / p.data.length, ...(q ? { bits: q.bits, groupSize: q.groupSize } : {}) }];
  });
  let deployed: ModelDescription['quantization'];
  if (quantization !== undefined && quantization.matrices.size > 0) {
    let bytesDeployed = 0;
    for (const [name, p] of c.params) {
      const q = quantization.matrices.get(name);
      bytesDeployed += q ? quantizedBytes(q) : p.data.length * 4;
    }
    deployed = { file: quantization.file, bytesOnDisk: quantization.bytes, matrices: quantization.matrices.size, bytesDeployed };
  }
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
    matrices,
    sparsity: total === 0 ? 0 : zeros / total,
    ...(deployed ? { quantization: deployed } : {}),
  };
}
