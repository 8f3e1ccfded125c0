/**
 * Static shape inference over a Dikē graph, for graphs built at fixed input shapes (training steps).
 *
 * Reverse-mode rules need the shape of every value (to undo broadcasting, to rebuild a reshaped
 * gradient), so training graphs are built for a concrete [batch, seq]. Small integer tensors that
 * only describe shapes (Shape → Slice → Concat → Reshape) are evaluated here as well, which is what
 * makes the forward graphs' dynamic reshapes static.
 */
import type { ElemType, Graph, InitTensor, Node } from '../model/graph/ir.js';
import { numel } from '../model/graph/ir.js';

export interface ValueFacts {
  type: ElemType;
  shape: number[];
  /** Values of a small integer tensor, when known at build time (row-major). */
  value?: number[];
}

export type ShapeMap = Map<string, ValueFacts>;

const TYPE_BY_CODE: Record<number, ElemType> = { 11: 'float64', 1: 'float32', 2: 'uint8', 3: 'int8', 6: 'int32', 7: 'int64', 9: 'bool' };

/** Largest integer tensor whose values are tracked (shape vectors, positions). */
const MAX_TRACKED = 4096;

export function broadcastShapes(...shapes: number[][]): number[] {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    let d = 1;
    for (const s of shapes) {
      const k = s.length - rank + i;
      const v = k < 0 ? 1 : s[k]!;
      if (v !== 1) {
        if (d !== 1 && d !== v) throw new Error(`shapes [${shapes.map((x) => x.join(',')).join('] [')}] do not broadcast`);
        d = v;
      }
    }
    out.push(d);
  }
  return out;
}

function initFacts(t: InitTensor): ValueFacts {
  const f: ValueFacts = { type: t.type, shape: [...t.dims] };
  if ((t.type === 'int64' || t.type === 'int32') && t.data.length <= MAX_TRACKED) f.value = Array.from(t.data as ArrayLike<number | bigint>, Number);
  return f;
}

function normAxis(axis: number, rank: number): number {
  return axis < 0 ? axis + rank : axis;
}

function ints(n: Node, key: string): number[] | undefined {
  const v = n.attrs[key];
  return Array.isArray(v) ? v : undefined;
}

function int(n: Node, key: string, dflt: number): number {
  const v = n.attrs[key];
  return typeof v === 'number' ? v : dflt;
}

/** Elementwise integer arithmetic with broadcasting, for tracked values. */
function evalBinary(a: ValueFacts, b: ValueFacts, shape: number[], f: (x: number, y: number) => number): number[] | undefined {
  if (a.value === undefined || b.value === undefined || numel(shape) > MAX_TRACKED) return undefined;
  const out: number[] = [];
  const n = numel(shape);
  const index = (s: number[], flat: number): number => {
    let rem = flat;
    let idx = 0;
    let stride = 1;
    for (let i = shape.length - 1; i >= 0; i--) {
      const coord = rem % shape[i]!;
      rem = Math.floor(rem / shape[i]!);
      const k = s.length - shape.length + i;
      if (k >= 0) {
        idx += (s[k] === 1 ? 0 : coord) * stride;
        stride *= s[k]!;
      }
    }
    return idx;
  };
  for (let i = 0; i < n; i++) out.push(f(a.value[index(a.shape, i)]!, b.value[index(b.shape, i)]!));
  return out;
}

export function inferShapes(g: Graph, inputShapes: Readonly<Record<string, number[]>>): ShapeMap {
  const facts: ShapeMap = new Map();
  for (const inp of g.inputs) {
    const shape = inputShapes[inp.name] ?? inp.shape.map((d) => {
      if (typeof d === 'number') return d;
      throw new Error(`input ${inp.name}: symbolic dimension ${d} needs a size`);
    });
    facts.set(inp.name, { type: inp.type, shape: [...shape] });
  }
  for (const [name, t] of g.initializers) facts.set(name, initFacts(t));
  for (const n of g.nodes) inferNode(n, facts);
  return facts;
}

export function inferNode(n: Node, facts: ShapeMap): void {
  const get = (i: number): ValueFacts => {
    const name = n.inputs[i];
    const f = name === undefined || name === '' ? undefined : facts.get(name);
    if (f === undefined) throw new Error(`${n.op}: input ${i} (${name}) has no known shape`);
    return f;
  };
  const set = (f: ValueFacts, i = 0): void => {
    facts.set(n.outputs[i]!, f);
  };
  const x = n.inputs.length > 0 ? get(0) : undefined;
  switch (n.op) {
    case 'Identity':
      set({ ...x! });
      return;
    case 'Add': case 'Sub': case 'Mul': case 'Div': {
      const b = get(1);
      const shape = broadcastShapes(x!.shape, b.shape);
      const f: ValueFacts = { type: x!.type, shape };
      if (x!.type === 'int64' || x!.type === 'int32') {
        const ops: Record<string, (p: number, q: number) => number> = {
          Add: (p, q) => p + q, Sub: (p, q) => p - q, Mul: (p, q) => p * q, Div: (p, q) => Math.trunc(p / q),
        };
        const v = evalBinary(x!, b, shape, ops[n.op]!);
        if (v !== undefined) f.value = v;
      }
      set(f);
      return;
    }
    case 'Less': case 'LessOrEqual': case 'Greater': case 'GreaterOrEqual': case 'Equal': case 'And': case 'Or':
      set({ type: 'bool', shape: broadcastShapes(x!.shape, get(1).shape) });
      return;
    case 'Not':
      set({ type: 'bool', shape: [...x!.shape] });
      return;
    case 'Where':
      set({ type: get(1).type, shape: broadcastShapes(x!.shape, get(1).shape, get(2).shape) });
      return;
    case 'Max': case 'Min': case 'Sum': case 'Pow':
      set({ type: x!.type, shape: broadcastShapes(...n.inputs.map((_, i) => get(i).shape)) });
      return;
    case 'Neg': case 'Erf': case 'Tanh': case 'Sigmoid': case 'Sqrt': case 'Reciprocal': case 'Relu': case 'Exp': case 'Log':
    case 'Softmax': case 'LogSoftmax': case 'Abs':
      set({ type: x!.type, shape: [...x!.shape] });
      return;
    case 'LayerNormalization':
      set({ type: x!.type, shape: [...x!.shape] });
      return;
    case 'Cast': {
      const to = TYPE_BY_CODE[int(n, 'to', 1)]!;
      const f: ValueFacts = { type: to, shape: [...x!.shape] };
      if (x!.value !== undefined && (to === 'int64' || to === 'int32')) f.value = [...x!.value];
      set(f);
      return;
    }
    case 'MatMul': {
      const a = x!.shape;
      const b = get(1).shape;
      if (a.length < 2 || b.length < 2) throw new Error('MatMul: 1-D operands are not supported in training graphs');
      if (a[a.length - 1] !== b[b.length - 2]) throw new Error(`MatMul: [${a}] × [${b}]`);
      const batch = broadcastShapes(a.slice(0, -2), b.slice(0, -2));
      set({ type: x!.type, shape: [...batch, a[a.length - 2]!, b[b.length - 1]!] });
      return;
    }
    case 'Gemm': {
      const a = x!.shape;
      const b = get(1).shape;
      const m = int(n, 'transA', 0) ? a[1]! : a[0]!;
      const k = int(n, 'transA', 0) ? a[0]! : a[1]!;
      const kb = int(n, 'transB', 0) ? b[1]! : b[0]!;
      const nn = int(n, 'transB', 0) ? b[0]! : b[1]!;
      if (k !== kb) throw new Error(`Gemm: [${a}] × [${b}]`);
      set({ type: x!.type, shape: [m, nn] });
      return;
    }
    case 'Shape': {
      const r = x!.shape.length;
      const start = normAxis(int(n, 'start', 0), r);
      const end = n.attrs['end'] === undefined ? r : normAxis(int(n, 'end', r), r);
      const value = x!.shape.slice(start, end);
      set({ type: 'int64', shape: [value.length], value });
      return;
    }
    case 'ConstantOfShape': {
      const shape = get(0).value;
      if (shape === undefined) throw new Error('ConstantOfShape: shape not known at build time');
      const t = n.attrs['value'] as InitTensor | undefined;
      set({ type: t?.type ?? 'float32', shape: [...shape] });
      return;
    }
    case 'Reshape': {
      const target = get(1).value;
      if (target === undefined) throw new Error('Reshape: target shape not known at build time');
      const shape = target.map((d, i) => (d === 0 ? x!.shape[i]! : d));
      const known = shape.filter((d) => d !== -1).reduce((p, q) => p * q, 1);
      const total = numel(x!.shape);
      const out = shape.map((d) => (d === -1 ? total / known : d));
      if (numel(out) !== total) throw new Error(`Reshape: [${x!.shape}] → [${target}]`);
      const f: ValueFacts = { type: x!.type, shape: out };
      if (x!.value !== undefined) f.value = [...x!.value];
      set(f);
      return;
    }
    case 'Transpose': {
      const perm = ints(n, 'perm') ?? x!.shape.map((_, i) => x!.shape.length - 1 - i);
      set({ type: x!.type, shape: perm.map((p) => x!.shape[p]!) });
      return;
    }
    case 'Concat': {
      const parts = n.inputs.map((_, i) => get(i));
      const axis = normAxis(int(n, 'axis', 0), x!.shape.length);
      const shape = [...x!.shape];
      shape[axis] = parts.reduce((s, p) => s + p.shape[axis]!, 0);
      const f: ValueFacts = { type: x!.type, shape };
      if (shape.length === 1 && parts.every((p) => p.value !== undefined)) f.value = parts.flatMap((p) => p.value!);
      set(f);
      return;
    }
    case 'Unsqueeze': case 'Squeeze': {
      const axesV = n.inputs.length > 1 ? get(1).value : undefined;
      let shape: number[];
      if (n.op === 'Unsqueeze') {
        const rank = x!.shape.length + axesV!.length;
        const axes = new Set(axesV!.map((a) => normAxis(a, rank)));
        shape = [];
        let k = 0;
        for (let i = 0; i < rank; i++) shape.push(axes.has(i) ? 1 : x!.shape[k++]!);
      } else {
        const axes = new Set((axesV ?? x!.shape.flatMap((d, i) => (d === 1 ? [i] : []))).map((a) => normAxis(a, x!.shape.length)));
        shape = x!.shape.filter((_, i) => !axes.has(i));
      }
      const f: ValueFacts = { type: x!.type, shape };
      if (x!.value !== undefined) f.value = [...x!.value];
      set(f);
      return;
    }
    case 'Expand': {
      const target = get(1).value;
      if (target === undefined) throw new Error('Expand: shape not known at build time');
      set({ type: x!.type, shape: broadcastShapes(x!.shape, target) });
      return;
    }
    case 'Slice': {
      const { starts, ends, axes } = sliceParams(n, facts, x!.shape);
      const shape = [...x!.shape];
      axes.forEach((a, i) => { shape[a] = Math.max(0, ends[i]! - starts[i]!); });
      const f: ValueFacts = { type: x!.type, shape };
      if (x!.value !== undefined && x!.shape.length === 1) f.value = x!.value.slice(starts[0]!, ends[0]!);
      set(f);
      return;
    }
    case 'Gather': {
      const idx = get(1);
      const axis = normAxis(int(n, 'axis', 0), x!.shape.length);
      const shape = [...x!.shape.slice(0, axis), ...idx.shape, ...x!.shape.slice(axis + 1)];
      const f: ValueFacts = { type: x!.type, shape };
      if (x!.value !== undefined && idx.value !== undefined && x!.shape.length === 1) {
        f.value = idx.value.map((i) => x!.value![i < 0 ? i + x!.shape[0]! : i]!);
      }
      set(f);
      return;
    }
    case 'SoftmaxCrossEntropyLoss': {
      const reduced = n.attrs['reduction'] === 'none' ? [x!.shape[0]!] : [];
      set({ type: x!.type, shape: reduced });
      if (n.outputs.length > 1) set({ type: x!.type, shape: [...x!.shape] }, 1);
      return;
    }
    case 'GatherElements':
      set({ type: x!.type, shape: [...get(1).shape] });
      return;
    case 'ScatterND': case 'ScatterElements':
      set({ type: x!.type, shape: [...x!.shape] });
      return;
    case 'Pad': {
      const pads = get(1).value!;
      const r = x!.shape.length;
      set({ type: x!.type, shape: x!.shape.map((d, i) => d + pads[i]! + pads[i + r]!) });
      return;
    }
    case 'Range': {
      const [s, l, d] = [get(0).value?.[0], get(1).value?.[0], get(2).value?.[0]];
      if (s === undefined || l === undefined || d === undefined) throw new Error('Range: bounds not known at build time');
      const len = Math.max(0, Math.ceil((l - s) / d));
      const f: ValueFacts = { type: x!.type, shape: [len] };
      if (len <= MAX_TRACKED) f.value = Array.from({ length: len }, (_, i) => s + i * d);
      set(f);
      return;
    }
    case 'ReduceMean': case 'ReduceSumSquare': case 'ReduceMax': case 'ReduceSum': {
      const axes = reduceAxes(n, facts, x!.shape.length);
      const keep = int(n, 'keepdims', 1) === 1;
      const shape = keep ? x!.shape.map((d, i) => (axes.includes(i) ? 1 : d)) : x!.shape.filter((_, i) => !axes.includes(i));
      set({ type: x!.type, shape });
      return;
    }
    default:
      throw new Error(`shape inference: operator ${n.op} is not supported in training graphs`);
  }
}

/** Axes of a reduction: attribute (ReduceMean etc. at opset 17) or second input (ReduceSum ≥ 13); all when absent. */
export function reduceAxes(n: Node, facts: ShapeMap, rank: number): number[] {
  let axes = ints(n, 'axes');
  if (axes === undefined && n.inputs.length > 1 && n.inputs[1] !== '') axes = facts.get(n.inputs[1]!)?.value;
  if (axes === undefined) return Array.from({ length: rank }, (_, i) => i);
  return axes.map((a) => normAxis(a, rank)).sort((p, q) => p - q);
}

/** Normalised Slice parameters (step 1 only), clamped as ONNX clamps them. */
export function sliceParams(n: Node, facts: ShapeMap, shape: number[]): { starts: number[]; ends: number[]; axes: number[] } {
  const val = (i: number): number[] | undefined => (n.inputs[i] === undefined || n.inputs[i] === '' ? undefined : facts.get(n.inputs[i]!)?.value);
  const starts = val(1);
  const ends = val(2);
  if (starts === undefined || ends === undefined) throw new Error('Slice: bounds not known at build time');
  const axes = (val(3) ?? starts.map((_, i) => i)).map((a) => normAxis(a, shape.length));
  const steps = val(4);
  if (steps !== undefined && steps.some((s) => s !== 1)) throw new Error('Slice: only step 1 is supported in training graphs');
  const clamp = (v: number, d: number): number => Math.min(Math.max(v < 0 ? v + d : v, 0), d);
  return {
    starts: starts.map((s, i) => clamp(s, shape[axes[i]!]!)),
    ends: ends.map((e, i) => clamp(e, shape[axes[i]!]!)),
    axes,
  };
}

/**
 * Replace every integer value known at build time (shape arithmetic, positions) by a constant and
 * drop the nodes nothing reads any more. The step graph is then static, which is both simpler for
 * ONNX Runtime to optimise and avoids its reshape-fusion passes tripping over shape subgraphs.
 */
export function foldConstants(g: Graph, facts: ShapeMap): void {
  const kept: Node[] = [];
  for (const n of g.nodes) {
    const known = n.outputs.every((o) => {
      const f = facts.get(o);
      return f !== undefined && f.value !== undefined && (f.type === 'int64' || f.type === 'int32');
    });
    if (!known) {
      kept.push(n);
      continue;
    }
    for (const o of n.outputs) {
      const f = facts.get(o)!;
      const data = f.type === 'int64' ? BigInt64Array.from(f.value!.map((v) => BigInt(v))) : Int32Array.from(f.value!);
      g.initializers.set(o, { type: f.type, dims: [...f.shape], data });
    }
  }
  g.nodes = pruneDead(kept, new Set(g.outputs.map((o) => o.name)));
  const read = new Set(g.nodes.flatMap((n) => n.inputs));
  for (const o of g.outputs) read.add(o.name);
  for (const name of [...g.initializers.keys()]) if (!read.has(name)) g.initializers.delete(name);
}

/** Nodes that (transitively) feed a graph output. */
export function pruneDead(nodes: Node[], outputs: Set<string>): Node[] {
  const needed = new Set(outputs);
  const keep: boolean[] = new Array(nodes.length).fill(false);
  for (let i = nodes.length - 1; i >= 0; i--) {
    const n = nodes[i]!;
    if (n.outputs.some((o) => needed.has(o))) {
      keep[i] = true;
      for (const x of n.inputs) if (x !== '') needed.add(x);
    }
  }
  return nodes.filter((_, i) => keep[i]);
}
