/**
 * Reverse-mode rules, one per ONNX operator that Dikē's model and loss graphs use. Each rule reads
 * the forward node and the gradient of its output and writes the gradients of its inputs as ONNX
 * nodes (vector-Jacobian products). Shapes are static (see shapes.ts), so undoing broadcasting is a
 * ReduceSum over known axes.
 *
 * The formulas are the standard ones (e.g. Baydin et al. 2018, "Automatic differentiation in machine
 * learning: a survey"; the LayerNorm backward as in llm.c's layernorm_backward).
 */
import type { GraphBuilder } from '../model/graph/build.js';
import type { Node } from '../model/graph/ir.js';
import { numel } from '../model/graph/ir.js';
import { reduceAxes, sliceParams, type ShapeMap } from './shapes.js';

export interface GradContext {
  b: GraphBuilder;
  facts: ShapeMap;
}

/** Gradients of a node's inputs (undefined: none / not differentiable) given its outputs' gradients. */
export type GradRule = (c: GradContext, n: Node, gy: readonly (string | undefined)[]) => (string | undefined)[];

export function shapeOf(c: GradContext, name: string): number[] {
  const f = c.facts.get(name);
  if (f === undefined) throw new Error(`no shape for ${name}`);
  return f.shape;
}

function same(p: readonly number[], q: readonly number[]): boolean {
  return p.length === q.length && p.every((d, i) => d === q[i]);
}

/** Sum a gradient of shape `from` down to the (broadcast-compatible) shape `to`. */
export function unbroadcast(c: GradContext, g: string, from: number[], to: number[]): string {
  if (same(from, to)) return g;
  const lead = from.length - to.length;
  const axes: number[] = [];
  for (let i = 0; i < from.length; i++) {
    if (i < lead || (to[i - lead] === 1 && from[i] !== 1)) axes.push(i);
  }
  const summed = axes.length === 0 ? g : c.b.reduceSum(g, axes, true);
  return c.b.reshape(summed, c.b.ints(to));
}

const isFloat = (c: GradContext, name: string | undefined): boolean => name !== undefined && name !== '' && c.facts.get(name)?.type === 'float32';

/** The gradient of a broadcasting binary op's inputs, given the elementwise partials. */
function binary(c: GradContext, n: Node, ga: string | undefined, gb: string | undefined): (string | undefined)[] {
  const out = shapeOf(c, n.outputs[0]!);
  return [
    ga === undefined ? undefined : unbroadcast(c, ga, out, shapeOf(c, n.inputs[0]!)),
    gb === undefined ? undefined : unbroadcast(c, gb, out, shapeOf(c, n.inputs[1]!)),
  ];
}

function swapLast(c: GradContext, x: string): string {
  const r = shapeOf(c, x).length;
  const perm = Array.from({ length: r }, (_, i) => i);
  perm[r - 2] = r - 1;
  perm[r - 1] = r - 2;
  return c.b.transpose(x, perm);
}

function intAttr(n: Node, key: string, dflt: number): number {
  const v = n.attrs[key];
  return typeof v === 'number' ? v : dflt;
}

/** Gradient wrt a reshape-like op's input: reshape back. */
const reshapeBack: GradRule = (c, n, [g]) => [c.b.reshape(g!, c.b.ints(shapeOf(c, n.inputs[0]!)))];

export const GRAD_RULES: Readonly<Record<string, GradRule>> = {
  Identity: (_c, _n, [g]) => [g],
  Add: (c, n, [g]) => binary(c, n, g, g),
  Sub: (c, n, [g]) => binary(c, n, g, c.b.neg(g!)),
  Mul: (c, n, [g]) => {
    const [a, b] = n.inputs as [string, string];
    return binary(c, n, isFloat(c, a) ? c.b.mul(g!, b) : undefined, isFloat(c, b) ? c.b.mul(g!, a) : undefined);
  },
  // d(a/b) = da/b − db·(a/b)/b
  Div: (c, n, [g]) => {
    const [a, b] = n.inputs as [string, string];
    const y = n.outputs[0]!;
    return binary(c, n, c.b.div(g!, b), isFloat(c, b) ? c.b.neg(c.b.div(c.b.mul(g!, y), b)) : undefined);
  },
  Neg: (c, _n, [g]) => [c.b.neg(g!)],
  // d erf(x) = 2/√π · exp(−x²)
  Erf: (c, n, [g]) => {
    const x = n.inputs[0]!;
    return [c.b.mul(g!, c.b.mul(c.b.scalar(2 / Math.sqrt(Math.PI)), c.b.exp(c.b.neg(c.b.mul(x, x)))))];
  },
  Tanh: (c, n, [g]) => {
    const y = n.outputs[0]!;
    return [c.b.mul(g!, c.b.sub(c.b.scalar(1), c.b.mul(y, y)))];
  },
  Sigmoid: (c, n, [g]) => {
    const y = n.outputs[0]!;
    return [c.b.mul(g!, c.b.mul(y, c.b.sub(c.b.scalar(1), y)))];
  },
  Exp: (c, n, [g]) => [c.b.mul(g!, n.outputs[0]!)],
  Log: (c, n, [g]) => [c.b.div(g!, n.inputs[0]!)],
  Sqrt: (c, n, [g]) => [c.b.div(c.b.mul(g!, c.b.scalar(0.5)), n.outputs[0]!)],
  Reciprocal: (c, n, [g]) => {
    const y = n.outputs[0]!;
    return [c.b.neg(c.b.mul(g!, c.b.mul(y, y)))];
  },
  Relu: (c, n, [g]) => [c.b.where(c.b.node('Greater', [n.inputs[0]!, c.b.scalar(0)])[0]!, g!, c.b.scalar(0))],
  Cast: (c, n, [g]) => [isFloat(c, n.inputs[0]) && isFloat(c, n.outputs[0]) ? g : undefined],
  Where: (c, n, [g]) => {
    const [cond, a, b] = n.inputs as [string, string, string];
    const out = shapeOf(c, n.outputs[0]!);
    const zero = c.b.scalar(0);
    return [
      undefined,
      isFloat(c, a) ? unbroadcast(c, c.b.where(cond, g!, zero), out, shapeOf(c, a)) : undefined,
      isFloat(c, b) ? unbroadcast(c, c.b.where(cond, zero, g!), out, shapeOf(c, b)) : undefined,
    ];
  },
  MatMul: (c, n, [g]) => {
    const [a, b] = n.inputs as [string, string];
    const out = shapeOf(c, n.outputs[0]!);
    const ga = c.b.matmul(g!, swapLast(c, b));
    const gb = c.b.matmul(swapLast(c, a), g!);
    const aShape = shapeOf(c, a);
    const bShape = shapeOf(c, b);
    return [
      unbroadcast(c, ga, [...out.slice(0, -2), ...aShape.slice(-2)], aShape),
      unbroadcast(c, gb, [...out.slice(0, -2), ...bShape.slice(-2)], bShape),
    ];
  },
  // y = a·op(b) + c, op(b) = bᵀ when transB (forward graphs never set transA, alpha or beta).
  Gemm: (c, n, [g]) => {
    if (intAttr(n, 'transA', 0) !== 0 || n.attrs['alpha'] !== undefined || n.attrs['beta'] !== undefined) {
      throw new Error('Gemm with transA/alpha/beta is not differentiated');
    }
    const [a, w, bias] = n.inputs as [string, string, string | undefined];
    const transB = intAttr(n, 'transB', 0) === 1;
    const ga = c.b.node('Gemm', [g!, w], { transB: transB ? 0 : 1 })[0]!;
    const gw = transB ? c.b.node('Gemm', [g!, a], { transA: 1 })[0]! : c.b.node('Gemm', [a, g!], { transA: 1 })[0]!;
    const gc = bias === undefined || bias === '' ? undefined : unbroadcast(c, g!, shapeOf(c, n.outputs[0]!), shapeOf(c, bias));
    return [ga, gw, gc];
  },
  Reshape: reshapeBack,
  Squeeze: reshapeBack,
  Unsqueeze: reshapeBack,
  Transpose: (c, n, [g]) => {
    const r = shapeOf(c, n.inputs[0]!).length;
    const perm = (n.attrs['perm'] as number[] | undefined) ?? Array.from({ length: r }, (_, i) => r - 1 - i);
    const inv = new Array<number>(r);
    perm.forEach((p, i) => { inv[p] = i; });
    return [c.b.transpose(g!, inv)];
  },
  Concat: (c, n, [g]) => {
    const r = shapeOf(c, n.inputs[0]!).length;
    const axisAttr = intAttr(n, 'axis', 0);
    const axis = axisAttr < 0 ? axisAttr + r : axisAttr;
    let start = 0;
    return n.inputs.map((x) => {
      const len = shapeOf(c, x)[axis]!;
      const piece = isFloat(c, x) ? c.b.slice(g!, [start], [start + len], [axis]) : undefined;
      start += len;
      return piece;
    });
  },
  Slice: (c, n, [g]) => {
    const x = n.inputs[0]!;
    const shape = shapeOf(c, x);
    const { starts, ends, axes } = sliceParams(n, c.facts, shape);
    const pads = new Array<number>(2 * shape.length).fill(0);
    axes.forEach((a, i) => {
      pads[a] = starts[i]!;
      pads[a + shape.length] = shape[a]! - ends[i]!;
    });
    return [c.b.node('Pad', [g!, c.b.ints(pads)])[0]!];
  },
  Expand: (c, n, [g]) => [unbroadcast(c, g!, shapeOf(c, n.outputs[0]!), shapeOf(c, n.inputs[0]!))],
  // Embedding lookup: the gradient rows are scattered back and summed where an id repeats.
  Gather: (c, n, [g]) => {
    const [data, idx] = n.inputs as [string, string];
    if (!isFloat(c, data)) return [undefined, undefined];
    if (intAttr(n, 'axis', 0) !== 0) throw new Error('Gather is differentiated on axis 0 only');
    const zeros = zerosLike(c, shapeOf(c, data));
    const idxFacts = c.facts.get(idx)!;
    const graphInput = c.b.graph.inputs.some((v) => v.name === idx);
    if (!graphInput) {
      // Constant or computed indices (positions 0..S−1): distinct, so a scatter is race-free.
      return [c.b.node('ScatterND', [zeros, c.b.unsqueeze(idx, [idxFacts.shape.length]), g!], { reduction: 'add' })[0]!, undefined];
    }
    // Indices fed at run time (token ids) repeat. ONNX Runtime's multi-threaded ScatterND with
    // reduction "add" loses updates when an index repeats (measured: the word-embedding gradient of a
    // 32×64 batch changed by 1e-2 between identical runs). So the rows of each distinct id are summed
    // first, as segment sums of the rows sorted by id: a float64 cumulative sum P (with a zero row on
    // top) gives segment s as P[hi_s] − P[lo_s]. The host gives the order, the bounds and the ids
    // (`<idx>:order`, `:lo`, `:hi`, `:unique`; see segmentFeeds), and the sums go to distinct rows.
    const N = idxFacts.shape.reduce((p, q) => p * q, 1);
    const [V, ...row] = shapeOf(c, data);
    const slots = Math.min(N, V!);
    const width = row.reduce((p, q) => p * q, 1);
    const b = c.b;
    const order = b.input(`${idx}:order`, 'int64', [N]);
    const lo = b.input(`${idx}:lo`, 'int64', [slots]);
    const hi = b.input(`${idx}:hi`, 'int64', [slots]);
    const unique = b.input(`${idx}:unique`, 'int64', [slots]);
    const sorted = b.cast(b.gather(b.reshape(g!, b.ints([N, width])), order), 'float64');
    const prefix = b.node('Pad', [b.node('CumSum', [sorted, b.constant('int64', [], [0])])[0]!, b.ints([1, 0, 0, 0])])[0]!; // [N+1, width]
    const perSlot = b.cast(b.sub(b.gather(prefix, hi), b.gather(prefix, lo)), 'float32');
    const updates = b.reshape(perSlot, b.ints([slots, ...row]));
    return [b.node('ScatterND', [zeros, b.unsqueeze(unique, [1]), updates], { reduction: 'add' })[0]!, undefined];
  },
  GatherElements: (c, n, [g]) => {
    const [data, idx] = n.inputs as [string, string];
    const zeros = zerosLike(c, shapeOf(c, data));
    return [c.b.node('ScatterElements', [zeros, idx, g!], { axis: intAttr(n, 'axis', 0), reduction: 'add' })[0]!, undefined];
  },
  // Per-row cross-entropy ℓ_r = −log softmax(x_r)[t_r] (reduction 'none'), second output log softmax(x):
  //   dx_r = g_r · (softmax(x_r) − onehot(t_r)), written as a scale of exp(log_prob) and one scatter-add,
  //   which touches the [rows, vocabulary] matrix fewer times than LogSoftmax + GatherElements would.
  SoftmaxCrossEntropyLoss: (c, n, [g, gLogProb]) => {
    if (n.attrs['reduction'] !== 'none' || n.inputs.length > 2 || n.attrs['ignore_index'] !== undefined) {
      throw new Error('SoftmaxCrossEntropyLoss is differentiated with reduction "none", no class weights and no ignore_index');
    }
    const [, labels] = n.inputs as [string, string];
    const logProb = n.outputs[1]!;
    const b = c.b;
    const probs = b.exp(logProb);
    let dx: string | undefined;
    if (g !== undefined) {
      const col = b.unsqueeze(g, [1]);
      dx = b.node('ScatterElements', [b.mul(probs, col), b.unsqueeze(labels, [1]), b.neg(col)], { axis: 1, reduction: 'add' })[0]!;
    }
    if (gLogProb !== undefined) {
      const viaLogProb = b.sub(gLogProb, b.mul(probs, b.reduceSum(gLogProb, [1], true)));
      dx = dx === undefined ? viaLogProb : b.add(dx, viaLogProb);
    }
    return [dx, undefined];
  },
  // y = softmax(x): dx = y ⊙ (g − Σ g⊙y)
  Softmax: (c, n, [g]) => {
    const y = n.outputs[0]!;
    const axis = intAttr(n, 'axis', -1);
    return [c.b.mul(y, c.b.sub(g!, c.b.reduceSum(c.b.mul(g!, y), [axis], true)))];
  },
  // y = log softmax(x): dx = g − exp(y)·Σ g
  LogSoftmax: (c, n, [g]) => {
    const y = n.outputs[0]!;
    const axis = intAttr(n, 'axis', -1);
    return [c.b.sub(g!, c.b.mul(c.b.exp(y), c.b.reduceSum(g!, [axis], true)))];
  },
  ReduceMean: (c, n, [g]) => {
    const x = n.inputs[0]!;
    const shape = shapeOf(c, x);
    const axes = reduceAxes(n, c.facts, shape.length);
    const count = axes.reduce((p, a) => p * shape[a]!, 1);
    return [c.b.mul(expandReduced(c, g!, shape, axes), c.b.scalar(1 / count))];
  },
  ReduceSum: (c, n, [g]) => {
    const x = n.inputs[0]!;
    const shape = shapeOf(c, x);
    return [expandReduced(c, g!, shape, reduceAxes(n, c.facts, shape.length)), undefined];
  },
  ReduceSumSquare: (c, n, [g]) => {
    const x = n.inputs[0]!;
    const shape = shapeOf(c, x);
    return [c.b.mul(expandReduced(c, g!, shape, reduceAxes(n, c.facts, shape.length)), c.b.mul(x, c.b.scalar(2)))];
  },
  // LayerNorm over the last axis from the forward pass's saved mean and 1/σ (llm.c layernorm_backward):
  //   dx = inv·(ĝ − mean(ĝ) − x̂·mean(ĝ⊙x̂)),  ĝ = g⊙γ;  dγ = Σ g⊙x̂;  dβ = Σ g
  LayerNormalization: (c, n, [g]) => {
    const [x, scale, bias] = n.inputs as [string, string, string | undefined];
    const axis = intAttr(n, 'axis', -1);
    const shape = shapeOf(c, x);
    if (axis !== -1 && axis !== shape.length - 1) throw new Error('LayerNormalization is differentiated over the last axis only');
    const b = c.b;
    let mean: string;
    let inv: string;
    if (n.outputs.length >= 3) {
      [mean, inv] = [n.outputs[1]!, n.outputs[2]!];
    } else {
      // Ask the forward node for its saved statistics (LayerNormalization's optional outputs Mean and
      // InvStdDev, shape [..., 1]) instead of recomputing them.
      mean = `${n.outputs[0]}:mean`;
      inv = `${n.outputs[0]}:inv_std`;
      n.outputs.push(mean, inv);
      const keep = [...shape.slice(0, -1), 1];
      c.facts.set(mean, { type: c.facts.get(x)!.type, shape: keep });
      c.facts.set(inv, { type: c.facts.get(x)!.type, shape: keep });
    }
    // The statistics are float32 (stash_type 1, the only kind ONNX Runtime implements); CastLike is a
    // no-op for float32 models and keeps a float64 graph (the finite-difference tests) well typed.
    mean = b.node('CastLike', [mean, x])[0]!;
    inv = b.node('CastLike', [inv, x])[0]!;
    const xhat = b.mul(b.sub(x, mean), inv);
    const gh = b.mul(g!, scale);
    const gx = b.mul(inv, b.sub(b.sub(gh, b.reduceMean(gh, [-1])), b.mul(xhat, b.reduceMean(b.mul(gh, xhat), [-1]))));
    const scaleShape = shapeOf(c, scale);
    return [
      gx,
      unbroadcast(c, b.mul(g!, xhat), shape, scaleShape),
      bias === undefined || bias === '' ? undefined : unbroadcast(c, g!, shape, shapeOf(c, bias)),
    ];
  },
};

/** A float32 zero tensor of a static shape. */
export function zerosLike(c: GradContext, shape: number[]): string {
  return c.b.node('ConstantOfShape', [c.b.ints(shape)], { value: { type: 'float32', dims: [1], data: new Float32Array([0]) } })[0]!;
}

/** A reduced gradient broadcast back over the reduced axes of `shape`. */
function expandReduced(c: GradContext, g: string, shape: number[], axes: number[]): string {
  const kept = shape.map((d, i) => (axes.includes(i) ? 1 : d));
  const r = numel(kept) === 1 && kept.length === 0 ? g : c.b.reshape(g, c.b.ints(kept));
  return c.b.expand(r, c.b.ints(shape));
}

/**
 * Host side of the Gather rule for indices fed at run time. Positions are ordered by id (stable), each
 * distinct id is one slot with rows lo..hi−1 of that order; `unique` holds the slots' ids, padded to
 * `slots` entries with ids absent from the batch and empty ranges (lo = hi = 0), so the scatter never sees
 * a repeated row (unused ids exist because slots ≤ table rows).
 */
export function segmentFeeds(ids: BigInt64Array, slots: number): { order: BigInt64Array; lo: BigInt64Array; hi: BigInt64Array; unique: BigInt64Array } {
  const positions = Array.from(ids.keys()).sort((p, q) => (ids[p]! < ids[q]! ? -1 : ids[p]! > ids[q]! ? 1 : p - q));
  const order = BigInt64Array.from(positions, BigInt);
  const lo = new BigInt64Array(slots);
  const hi = new BigInt64Array(slots);
  const unique = new BigInt64Array(slots);
  const present = new Set<bigint>();
  let s = -1;
  positions.forEach((pos, k) => {
    const id = ids[pos]!;
    if (s < 0 || unique[s] !== id) {
      s++;
      if (s >= slots) throw new Error(`more than ${slots} distinct indices`);
      unique[s] = id;
      lo[s] = BigInt(k);
      present.add(id);
    }
    hi[s] = BigInt(k + 1);
  });
  let next = 0n;
  for (let t = s + 1; t < slots; t++) {
    while (present.has(next)) next++;
    unique[t] = next;
    present.add(next);
  }
  return { order, lo, hi, unique };
}
