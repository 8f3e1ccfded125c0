/**
 * Dikē's graph IR: a short list of ONNX operators over named values and named weights.
 *
 * One representation serves inference (serialised to ONNX by `to-onnx.ts`), activation capture for
 * calibration (mark intermediate values as outputs) and, later, training (reverse-mode rules per op).
 * Node semantics are exactly the ONNX operator of the same name at the opset in `OPSET`.
 */

/** Default ONNX opset: 17 is the first with LayerNormalization. */
export const OPSET = 17;

export type ElemType = 'float32' | 'float64' | 'int64' | 'int32' | 'bool' | 'int8' | 'uint8';

/** A dimension is a fixed size or a symbolic name ("batch", "seq"). */
export type Dim = number | string;

export interface ValueInfo {
  name: string;
  type: ElemType;
  shape: Dim[];
}

export type AttrValue = number | number[] | string | { float: number } | { floats: number[] } | InitTensor;

export interface Node {
  op: string;
  /** Operator domain: '' is the ONNX default domain, 'com.microsoft' ORT's contrib ops. */
  domain: string;
  inputs: string[];
  outputs: string[];
  attrs: Record<string, AttrValue>;
  /** Where the node came from (e.g. "layer 3 attention"), for debugging and capture. */
  scope?: string;
}

/** A constant tensor held in the graph (a weight or a small constant). */
export interface InitTensor {
  type: ElemType;
  dims: number[];
  data: Float32Array | Float64Array | BigInt64Array | Int32Array | Uint8Array | Int8Array;
}

export interface Graph {
  name: string;
  inputs: ValueInfo[];
  outputs: ValueInfo[];
  nodes: Node[];
  /** Initializers by name. Weights keep their Hugging Face parameter names. */
  initializers: Map<string, InitTensor>;
  /** Extra operator domains used, with versions (e.g. com.microsoft: 1). */
  domains: Map<string, number>;
}

export function numel(dims: readonly number[]): number {
  let n = 1;
  for (const d of dims) n *= d;
  return n;
}
