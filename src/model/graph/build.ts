/**
 * GraphBuilder: write a model as straight-line code over named values, in the style of nanoGPT's
 * forward(). Each method appends one ONNX node and returns the name of its output.
 */
import { DikeError } from '../../errors.js';
import type { AttrValue, ElemType, Graph, InitTensor, Node, ValueInfo, Dim } from './ir.js';
import { numel } from './ir.js';

/** Where weights come from: a checkpoint's parameters (float32) by Hugging Face name. */
export interface WeightSource {
  /** File (or directory) to name in errors. */
  readonly file: string;
  get(name: string): { shape: readonly number[]; data: Float32Array } | undefined;
  /** Called for a weight `get` does not have (initialising a model from scratch); may return it. */
  create?(name: string, shape: readonly number[]): { shape: readonly number[]; data: Float32Array } | undefined;
}

export class GraphBuilder {
  readonly graph: Graph;
  private counter = 0;
  private scopeName = '';

  /**
   * A builder for a new graph, or one that appends to `existing` (training: the backward pass is
   * written onto the forward graph, under its own scope so that fresh names cannot collide).
   */
  constructor(name: string, private readonly weights: WeightSource, existing?: Graph) {
    this.graph = existing ?? { name, inputs: [], outputs: [], nodes: [], initializers: new Map(), domains: new Map() };
  }

  // ---- graph interface -------------------------------------------------------------------------

  input(name: string, type: ElemType, shape: Dim[]): string {
    this.graph.inputs.push({ name, type, shape });
    return name;
  }

  /** Expose `value` as graph output `name` (an Identity node renames it when needed). */
  output(value: string, name: string, type: ElemType, shape: Dim[]): string {
    if (value !== name) this.node('Identity', [value], {}, [name]);
    this.graph.outputs.push({ name, type, shape } satisfies ValueInfo);
    return name;
  }

  /**
   * A weight by its Hugging Face parameter name, checked against the shape the architecture expects.
   * The initializer keeps the parameter's name so that compression can find and swap it.
   */
  weight(name: string, shape: readonly number[]): string {
    if (this.graph.initializers.has(name)) return name;
    const w = this.weights.get(name) ?? this.weights.create?.(name, shape);
    if (w === undefined) throw new DikeError(this.weights.file, `tensor "${name}"`, 'missing from the weights');
    if (w.shape.length !== shape.length || w.shape.some((d, i) => d !== shape[i])) {
      throw new DikeError(
        this.weights.file,
        `tensor "${name}"`,
        `shape [${w.shape.join(', ')}] does not match the config, which implies [${shape.join(', ')}]`,
      );
    }
    this.graph.initializers.set(name, { type: 'float32', dims: [...shape], data: w.data });
    return name;
  }

  /** A constant tensor (not a weight). */
  constant(type: ElemType, dims: number[], values: readonly number[] | Float32Array, hint = 'const'): string {
    const name = this.fresh(hint);
    if (numel(dims) !== values.length) throw new Error(`constant ${name}: ${values.length} values for dims [${dims}]`);
    let data: InitTensor['data'];
    if (type === 'float32') data = Float32Array.from(values);
    else if (type === 'int64') data = BigInt64Array.from(Array.from(values, (v) => BigInt(v)));
    else if (type === 'int32') data = Int32Array.from(values);
    else throw new Error(`constant of type ${type} not supported`);
    this.graph.initializers.set(name, { type, dims, data });
    return name;
  }

  scalar(v: number): string {
    return this.constant('float32', [], [v], 'scalar');
  }

  ints(values: readonly number[]): string {
    return this.constant('int64', [values.length], values, 'ints');
  }

  /** Run `fn` with node scopes prefixed by `name` (recorded on nodes for capture and debugging). */
  scoped<T>(name: string, fn: () => T): T {
    const saved = this.scopeName;
    this.scopeName = saved === '' ? name : `${saved}/${name}`;
    try {
      return fn();
    } finally {
      this.scopeName = saved;
    }
  }

  /** Append a node; returns its output names (fresh ones unless given). */
  node(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}, outputs?: string[] | number, domain = ''): string[] {
    const outs =
      typeof outputs === 'number' || outputs === undefined
        ? Array.from({ length: outputs ?? 1 }, () => this.fresh(op))
        : outputs;
    const n: Node = { op, domain, inputs, outputs: outs, attrs };
    if (this.scopeName !== '') n.scope = this.scopeName;
    this.graph.nodes.push(n);
    if (domain !== '' && !this.graph.domains.has(domain)) this.graph.domains.set(domain, 1);
    return outs;
  }

  private fresh(hint: string): string {
    const prefix = this.scopeName === '' ? '' : `${this.scopeName}/`;
    return `${prefix}${hint}_${this.counter++}`;
  }

  private op1(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}): string {
    return this.node(op, inputs, attrs)[0]!;
  }

  // ---- elementwise -----------------------------------------------------------------------------
  add(a: string, b: string): string { return this.op1('Add', [a, b]); }
  sub(a: string, b: string): string { return this.op1('Sub', [a, b]); }
  mul(a: string, b: string): string { return this.op1('Mul', [a, b]); }
  div(a: string, b: string): string { return this.op1('Div', [a, b]); }
  neg(a: string): string { return this.op1('Neg', [a]); }
  erf(a: string): string { return this.op1('Erf', [a]); }
  exp(a: string): string { return this.op1('Exp', [a]); }
  log(a: string): string { return this.op1('Log', [a]); }
  tanh(a: string): string { return this.op1('Tanh', [a]); }
  sigmoid(a: string): string { return this.op1('Sigmoid', [a]); }
  sqrt(a: string): string { return this.op1('Sqrt', [a]); }
  reciprocal(a: string): string { return this.op1('Reciprocal', [a]); }
  cast(a: string, to: ElemType): string { return this.op1('Cast', [a], { to: onnxTypeCode(to) }); }
  where(cond: string, a: string, b: string): string { return this.op1('Where', [cond, a, b]); }
  less(a: string, b: string): string { return this.op1('Less', [a, b]); }
  lessOrEqual(a: string, b: string): string { return this.op1('LessOrEqual', [a, b]); }
  and(a: string, b: string): string { return this.op1('And', [a, b]); }

  // ---- linear algebra --------------------------------------------------------------------------
  matmul(a: string, b: string): string { return this.op1('MatMul', [a, b]); }

  /** y = a·bᵀ + c when transB (nn.Linear weights are [out, in]); a must be 2-D. */
  gemm(a: string, b: string, c: string | undefined, transB: boolean): string {
    const inputs = c === undefined ? [a, b] : [a, b, c];
    return this.op1('Gemm', inputs, { transB: transB ? 1 : 0 });
  }

  // ---- shape -----------------------------------------------------------------------------------
  shape(a: string, start?: number, end?: number): string {
    const attrs: Record<string, AttrValue> = {};
    if (start !== undefined) attrs['start'] = start;
    if (end !== undefined) attrs['end'] = end;
    return this.op1('Shape', [a], attrs);
  }
  reshape(a: string, shape: string): string { return this.op1('Reshape', [a, shape]); }
  transpose(a: string, perm: number[]): string { return this.op1('Transpose', [a], { perm }); }
  concat(xs: string[], axis: number): string { return this.op1('Concat', xs, { axis }); }
  unsqueeze(a: string, axes: number[]): string { return this.op1('Unsqueeze', [a, this.ints(axes)]); }
  squeeze(a: string, axes: number[]): string { return this.op1('Squeeze', [a, this.ints(axes)]); }
  expand(a: string, shape: string): string { return this.op1('Expand', [a, shape]); }
  slice(a: string, starts: number[], ends: number[], axes: number[]): string {
    return this.op1('Slice', [a, this.ints(starts), this.ints(ends), this.ints(axes)]);
  }
  gather(data: string, indices: string, axis = 0): string { return this.op1('Gather', [data, indices], { axis }); }
  gatherElements(data: string, indices: string, axis: number): string {
    return this.op1('GatherElements', [data, indices], { axis });
  }
  range(start: string, limit: string, delta: string): string { return this.op1('Range', [start, limit, delta]); }

  // ---- reductions and normalisations -------------------------------------------------------------
  reduceMean(a: string, axes: number[], keepdims = true): string {
    return this.op1('ReduceMean', [a], { axes, keepdims: keepdims ? 1 : 0 });
  }
  /** ReduceSum (axes are an input from opset 13). */
  reduceSum(a: string, axes: number[], keepdims = true): string {
    return this.op1('ReduceSum', [a, this.ints(axes)], { keepdims: keepdims ? 1 : 0 });
  }
  softmax(a: string, axis = -1): string { return this.op1('Softmax', [a], { axis }); }
  logSoftmax(a: string, axis = -1): string { return this.op1('LogSoftmax', [a], { axis }); }
  /** LayerNormalization over the last axis (ONNX opset 17; biased variance, as torch). */
  layerNorm(x: string, scale: string, bias: string, epsilon: number): string {
    return this.op1('LayerNormalization', [x, scale, bias], { axis: -1, epsilon: { float: epsilon } });
  }
}

/** ONNX TensorProto.DataType codes. */
export function onnxTypeCode(t: ElemType): number {
  switch (t) {
    case 'float32': return 1;
    case 'uint8': return 2;
    case 'int8': return 3;
    case 'int32': return 6;
    case 'int64': return 7;
    case 'bool': return 9;
    case 'float64': return 11;
  }
}
