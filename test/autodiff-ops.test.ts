/**
 * Gradient checks for the reverse-mode autodiff (src/train/autodiff.ts, grad-rules.ts): for every
 * operator with a rule in GRAD_RULES, and for the blocks the models build from them (GELU, SiLU,
 * RMSNorm, rotary embeddings, masked attention, cross-entropy, distillation KL), the gradient the
 * emitted ONNX nodes compute is compared with central finite differences of the same graph's loss.
 *
 * Each case builds a small graph whose float inputs are graph inputs (so they can be perturbed),
 * reduces its output to the scalar loss = Σ output ⊙ R with a fixed random R (every output element
 * matters, with a different weight), runs inferShapes + differentiate as the training step does, and
 * runs loss and gradients in ONNX Runtime.
 *
 * Precision. The rules emit float32 constants (scalars, the seed gradient, zero tensors) because the
 * models train in float32, so a case is always built in float32; a float64 case then retypes the
 * finished graph (inputs, outputs, float constants, Cast targets, ConstantOfShape values) to double
 * and runs ORT's double kernels. That checks exactly the nodes the rules emit, evaluated in double:
 * with h = 1e-6 the central difference has truncation error h²/6·|f'''| ≈ 1e-13 and roundoff
 * ≈ eps64·|f|/h ≈ 1e-9, and the float32-rounded constants inside the rules (1/count, 2/√π, …)
 * contribute ≤ 6e-8 relative, so a tolerance of 1e-6 relative leaves a 10× margin while any wrong
 * formula (an error of O(1) relative) fails by orders of magnitude.
 * ORT 1.30's CPU provider has no double kernel for Erf, so the Erf and exact-GELU cases run in
 * float32 (see F32_TOL). The composite blocks also run in float32, as the models run them, which
 * includes whatever ORT's graph optimiser fuses in float32 graphs (Gelu, LayerNorm, attention).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import ort from 'onnxruntime-node';
import { GraphBuilder, type WeightSource } from '../src/model/graph/build.js';
import { numel, type Graph, type InitTensor } from '../src/model/graph/ir.js';
import { graphToOnnx } from '../src/model/graph/to-onnx.js';
import { activation, applyRotary, attention, attentionBias, bodyInputs, conv1d, FLOAT32_MIN, layerNorm, linear, rmsNorm } from '../src/model/arch/layers.js';
import { Rng } from '../src/util/rng.js';
import { ortSessionOptions } from '../src/runtime/session.js';
import { differentiate } from '../src/train/autodiff.js';
import { GRAD_RULES } from '../src/train/grad-rules.js';
import { foldConstants, inferShapes } from '../src/train/shapes.js';

type Dtype = 'float32' | 'float64';

/** Float64: see the header; h = 1e-6 on O(1) inputs. */
const F64_H = 1e-6;
const F64_TOL = 1e-6;
/**
 * Float32: h = 1e-2 on inputs of magnitude ≤ 2. Truncation h²/6·|f'''| ≈ 2e-5 for the O(1) third
 * derivatives of these smooth functions (times |R| ≤ 1); roundoff ≈ eps32·|f|/h with |f| ≲ 10 and
 * the loss's accumulation of ~100 float32 terms, ≈ 6e-8·10·10/1e-2 ≈ 6e-4 at worst, typically 1e-5.
 * 2e-3 relative (to max(1, |FD|)) sits above both (the worst case measured is 4e-5); a wrong rule
 * is off by O(1). Float64 cases measure ≤ 3e-8 (RMSNorm: the rules' float32-rounded 1/count),
 * mostly ~1e-10. AUTODIFF_OPS_VERBOSE=1 prints the worst error of each case.
 */
const F32_H = 1e-2;
const F32_TOL = 2e-3;

type Gen = (r: Rng) => number;
const uniform = (lo: number, hi: number): Gen => (r) => lo + (hi - lo) * r.next();
/** ±[lo, hi]: for Relu (no kink within h) and denominators. */
const awayFromZero = (lo: number, hi: number): Gen => (r) => (r.next() < 0.5 ? -1 : 1) * (lo + (hi - lo) * r.next());
const positive = uniform(0.5, 2);

interface Param {
  shape: number[];
  gen?: Gen;
}

interface Case {
  name: string;
  /** Float graph inputs the loss is differentiated against (default values uniform(−1, 1)). */
  params: Record<string, Param>;
  /** Builds the forward graph; returns the value the loss reads. `p` maps param names to values. */
  build: (b: GraphBuilder, p: Record<string, string>, r: Rng) => string;
  /** Default: float64. */
  dtypes?: Dtype[];
  /** int64 graph inputs with fixed values (input_ids, attention_mask of the attention cases). */
  intInputs?: Record<string, { shape: number[]; data: number[] }>;
  /** Further assertions on the analytic gradients. */
  after?: (grads: ReadonlyMap<string, ArrayLike<number>>, dtype: Dtype) => void;
}

/** A seed per case name, so that reordering cases changes nothing. */
function seedOf(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

function randoms(r: Rng, n: number, gen: Gen = uniform(-1, 1)): number[] {
  return Array.from({ length: n }, () => gen(r));
}

/** A bool constant (the builder's `constant` has no bool). */
function boolConstant(b: GraphBuilder, name: string, dims: number[], values: boolean[]): string {
  b.graph.initializers.set(name, { type: 'bool', dims, data: Uint8Array.from(values, (v) => (v ? 1 : 0)) });
  return name;
}

/**
 * Retype a finished float32 graph to float64: declared inputs and outputs, float initializers,
 * Cast targets and ConstantOfShape values. Node structure is untouched.
 */
function toFloat64(g: Graph): void {
  for (const v of [...g.inputs, ...g.outputs]) if (v.type === 'float32') v.type = 'float64';
  const widen = (t: InitTensor): InitTensor =>
    t.type === 'float32' ? { type: 'float64', dims: t.dims, data: Float64Array.from(t.data as Float32Array) } : t;
  for (const [k, t] of g.initializers) g.initializers.set(k, widen(t));
  for (const n of g.nodes) {
    if (n.op === 'Cast' && n.attrs['to'] === 1) n.attrs['to'] = 11;
    const v = n.attrs['value'];
    if (n.op === 'ConstantOfShape' && typeof v === 'object' && !Array.isArray(v) && 'dims' in v) n.attrs['value'] = widen(v);
  }
}

interface Built {
  graph: Graph;
  /** Forward operators (before differentiation). */
  forwardOps: Set<string>;
  wrt: string[];
}

/** Forward graph, loss = Σ out ⊙ R, differentiate, outputs `loss` and `grad.<param>` (float32 types). */
function buildCase(c: Case, r: Rng, wrtOverride?: string[]): Built {
  const weights: WeightSource = {
    file: `(test ${c.name})`,
    // Weights that layers.ts reads through b.weight() are graph inputs here: hand back a placeholder
    // of the right shape, and drop the initializer once the forward graph is built.
    get: (name) => {
      const p = c.params[name];
      return p === undefined ? undefined : { shape: p.shape, data: new Float32Array(numel(p.shape)) };
    },
  };
  const b = new GraphBuilder(c.name, weights);
  const p: Record<string, string> = {};
  for (const [name, param] of Object.entries(c.params)) p[name] = b.input(name, 'float32', param.shape);
  const out = c.build(b, p, r);
  for (const name of Object.keys(c.params)) b.graph.initializers.delete(name);
  const intShapes: Record<string, number[]> = {};
  for (const [name, t] of Object.entries(c.intInputs ?? {})) {
    // bodyInputs() declares input_ids and attention_mask itself, with symbolic [batch, seq].
    if (!b.graph.inputs.some((i) => i.name === name)) b.input(name, 'int64', t.shape);
    intShapes[name] = t.shape;
  }
  const forwardOps = new Set(b.graph.nodes.map((n) => n.op));

  const outShape = inferShapes(b.graph, intShapes).get(out)!.shape;
  const R = b.constant('float32', outShape, randoms(r, numel(outShape)), 'R');
  const weighted = b.mul(out, R);
  const loss = outShape.length === 0 ? weighted : b.reduceSum(weighted, outShape.map((_, i) => i), false);

  const facts = inferShapes(b.graph, intShapes);
  const wrt = wrtOverride ?? Object.keys(c.params);
  const grads = differentiate(b.graph, facts, loss, wrt);
  b.output(loss, 'loss', 'float32', []);
  for (const k of wrt) b.output(grads.get(k)!, `grad.${k}`, 'float32', c.params[k]!.shape);
  foldConstants(b.graph, facts);
  return { graph: b.graph, forwardOps, wrt };
}

interface CheckResult {
  /** Worst |analytic − FD| / max(1, |FD|) over all elements of all params. */
  worst: number;
  analytic: Map<string, Float32Array | Float64Array>;
  fd: Map<string, Float64Array>;
}

async function checkGradients(c: Case, dtype: Dtype, wrtOverride?: string[]): Promise<CheckResult> {
  const r = new Rng(seedOf(c.name));
  const { graph, wrt } = buildCase(c, r, wrtOverride);
  if (dtype === 'float64') toFloat64(graph);
  const session = await ort.InferenceSession.create(graphToOnnx(graph), ortSessionOptions(1));
  try {
    const values = new Map<string, Float32Array | Float64Array>();
    for (const [name, param] of Object.entries(c.params)) {
      const v = randoms(r, numel(param.shape), param.gen);
      values.set(name, dtype === 'float64' ? Float64Array.from(v) : Float32Array.from(v));
    }
    const feeds = (): Record<string, ort.Tensor> => {
      const f: Record<string, ort.Tensor> = {};
      for (const [name, v] of values) f[name] = new ort.Tensor(dtype, v, c.params[name]!.shape);
      for (const [name, t] of Object.entries(c.intInputs ?? {})) {
        f[name] = new ort.Tensor('int64', BigInt64Array.from(t.data, (x) => BigInt(x)), t.shape);
      }
      return f;
    };
    const lossAt = async (): Promise<number> => {
      const out = await session.run(feeds(), ['loss']);
      return Number((out['loss']!.data as Float32Array | Float64Array)[0]);
    };

    const res = await session.run(feeds());
    const analytic = new Map<string, Float32Array | Float64Array>();
    const fd = new Map<string, Float64Array>();
    const h = dtype === 'float64' ? F64_H : F32_H;
    const round = dtype === 'float64' ? (x: number): number => x : Math.fround;
    let worst = 0;
    for (const k of wrt) {
      const a = res[`grad.${k}`]!.data as Float32Array | Float64Array;
      assert.deepEqual(res[`grad.${k}`]!.dims, c.params[k]!.shape, `${c.name}: grad.${k} shape`);
      analytic.set(k, a);
      const x = values.get(k)!;
      const d = new Float64Array(x.length);
      for (let j = 0; j < x.length; j++) {
        const x0 = x[j]!;
        // The step actually taken, after rounding to the input's precision.
        const xp = round(x0 + h);
        const xm = round(x0 - h);
        x[j] = xp;
        const fp = await lossAt();
        x[j] = xm;
        const fm = await lossAt();
        x[j] = x0;
        d[j] = (fp - fm) / (xp - xm);
        const err = Math.abs(a[j]! - d[j]!) / Math.max(1, Math.abs(d[j]!));
        worst = Math.max(worst, err);
      }
      fd.set(k, d);
    }
    return { worst, analytic, fd };
  } finally {
    await session.release();
  }
}

function maxAbs(xs: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < xs.length; i++) m = Math.max(m, Math.abs(xs[i]!));
  return m;
}

async function assertGradientsMatch(c: Case, dtype: Dtype): Promise<void> {
  const { worst, analytic, fd } = await checkGradients(c, dtype);
  const tol = dtype === 'float64' ? F64_TOL : F32_TOL;
  for (const [k, a] of analytic) {
    const d = fd.get(k)!;
    // The case is meaningful (the input moves the loss) and the rule did not return zeros.
    assert.ok(maxAbs(d) > 1e-3, `${c.name} (${dtype}): finite differences of ${k} are all ~0; the case does not exercise it`);
    assert.ok(maxAbs(a) > 0, `${c.name} (${dtype}): the analytic gradient of ${k} is all zeros`);
    for (let j = 0; j < a.length; j++) {
      const err = Math.abs(a[j]! - d[j]!) / Math.max(1, Math.abs(d[j]!));
      assert.ok(err <= tol, `${c.name} (${dtype}): d loss/d ${k}[${j}] = ${a[j]} (autodiff) vs ${d[j]} (finite differences), error ${err.toExponential(2)} > ${tol}`);
    }
  }
  c.after?.(analytic, dtype);
  if (process.env['AUTODIFF_OPS_VERBOSE']) console.log(`${dtype} ${c.name}: worst ${worst.toExponential(2)}`);
}

// ---- cases -----------------------------------------------------------------------------------------

const ints = (b: GraphBuilder, v: number[]): string => b.ints(v);

const OPS: Case[] = [
  { name: 'Identity passes the gradient through', params: { x: { shape: [2, 3] } }, build: (b, p) => b.node('Identity', [p['x']!])[0]! },

  { name: 'Add of equal shapes', params: { a: { shape: [2, 3] }, b: { shape: [2, 3] } }, build: (b, p) => b.add(p['a']!, p['b']!) },
  {
    name: 'Add broadcasting both operands ([3,1] + [2,1,4]) sums each gradient back to its shape',
    params: { a: { shape: [3, 1] }, b: { shape: [2, 1, 4] } },
    build: (b, p) => b.add(p['a']!, p['b']!),
  },
  {
    name: 'Sub broadcasting both operands ([2,1,4] − [3,1]) negates the subtrahend gradient',
    params: { a: { shape: [2, 1, 4] }, b: { shape: [3, 1] } },
    build: (b, p) => b.sub(p['a']!, p['b']!),
  },
  {
    name: 'Mul broadcasting both operands ([3,1] ⊙ [2,1,4])',
    params: { a: { shape: [3, 1] }, b: { shape: [2, 1, 4] } },
    build: (b, p) => b.mul(p['a']!, p['b']!),
  },
  { name: 'Mul of a value by itself (x ⊙ x) sums both operand gradients', params: { x: { shape: [2, 3] } }, build: (b, p) => b.mul(p['x']!, p['x']!) },
  {
    name: 'Mul by a constant tensor differentiates the input side only',
    params: { x: { shape: [2, 3] } },
    build: (b, p, r) => b.mul(b.constant('float32', [3], randoms(r, 3)), p['x']!),
  },
  {
    name: 'Div broadcasting the numerator ([3,1] / [2,1,4])',
    params: { a: { shape: [3, 1] }, b: { shape: [2, 1, 4], gen: awayFromZero(0.5, 1.5) } },
    build: (b, p) => b.div(p['a']!, p['b']!),
  },
  {
    name: 'Div broadcasting the denominator ([2,3,4] / [3,1])',
    params: { a: { shape: [2, 3, 4] }, b: { shape: [3, 1], gen: awayFromZero(0.5, 1.5) } },
    build: (b, p) => b.div(p['a']!, p['b']!),
  },
  {
    name: 'Div by a constant scalar (attention scaling)',
    params: { x: { shape: [2, 3] } },
    build: (b, p) => b.div(p['x']!, b.scalar(1.7)),
  },
  { name: 'Neg', params: { x: { shape: [2, 3] } }, build: (b, p) => b.neg(p['x']!) },
  { name: 'Erf (float32: ORT has no double Erf)', params: { x: { shape: [2, 5], gen: uniform(-2, 2) } }, build: (b, p) => b.erf(p['x']!), dtypes: ['float32'] },
  { name: 'Tanh', params: { x: { shape: [2, 5], gen: uniform(-2, 2) } }, build: (b, p) => b.tanh(p['x']!) },
  { name: 'Sigmoid', params: { x: { shape: [2, 5], gen: uniform(-3, 3) } }, build: (b, p) => b.sigmoid(p['x']!) },
  { name: 'Exp', params: { x: { shape: [2, 5] } }, build: (b, p) => b.exp(p['x']!) },
  { name: 'Log of positive inputs', params: { x: { shape: [2, 5], gen: positive } }, build: (b, p) => b.log(p['x']!) },
  { name: 'Sqrt of positive inputs', params: { x: { shape: [2, 5], gen: positive } }, build: (b, p) => b.sqrt(p['x']!) },
  { name: 'Reciprocal of positive inputs', params: { x: { shape: [2, 5], gen: positive } }, build: (b, p) => b.reciprocal(p['x']!) },
  {
    name: 'Relu passes the gradient where the input is positive and blocks it elsewhere',
    params: { x: { shape: [3, 5], gen: awayFromZero(0.2, 1.5) } },
    build: (b, p) => b.node('Relu', [p['x']!])[0]!,
  },
  { name: 'Cast float to float passes the gradient through', params: { x: { shape: [2, 3] } }, build: (b, p) => b.mul(b.cast(p['x']!, 'float32'), p['x']!) },
  {
    name: 'Where routes the gradient to the chosen branch and unbroadcasts it (cond [3,1], a [3,4], b [4])',
    params: { a: { shape: [3, 4] }, b: { shape: [4] } },
    build: (b, p) => b.where(boolConstant(b, 'cond', [3, 1], [true, false, true]), p['a']!, p['b']!),
  },
  {
    name: 'Where with an elementwise condition and a constant branch',
    params: { a: { shape: [3, 4] } },
    build: (b, p, r) => b.where(boolConstant(b, 'cond', [3, 4], randoms(r, 12).map((v) => v > 0)), b.scalar(0.25), p['a']!),
  },

  { name: 'MatMul 2-D ([3,4] × [4,5])', params: { a: { shape: [3, 4] }, b: { shape: [4, 5] } }, build: (b, p) => b.matmul(p['a']!, p['b']!) },
  {
    name: 'MatMul 4-D batched as attention uses it (q·kᵀ, then probs·v)',
    params: { q: { shape: [2, 2, 3, 4] }, k: { shape: [2, 2, 3, 4] }, v: { shape: [2, 2, 3, 4] } },
    build: (b, p) => b.matmul(b.matmul(p['q']!, b.transpose(p['k']!, [0, 1, 3, 2])), p['v']!),
  },
  {
    name: 'MatMul 3-D × 2-D sums the weight gradient over the batch ([2,3,4] × [4,5])',
    params: { a: { shape: [2, 3, 4] }, b: { shape: [4, 5] } },
    build: (b, p) => b.matmul(p['a']!, p['b']!),
  },
  {
    name: 'MatMul 2-D × 3-D sums the left gradient over the batch ([3,4] × [2,4,5])',
    params: { a: { shape: [3, 4] }, b: { shape: [2, 4, 5] } },
    build: (b, p) => b.matmul(p['a']!, p['b']!),
  },
  {
    name: 'MatMul with batch dimensions broadcast both ways ([2,1,3,4] × [1,2,4,2])',
    params: { a: { shape: [2, 1, 3, 4] }, b: { shape: [1, 2, 4, 2] } },
    build: (b, p) => b.matmul(p['a']!, p['b']!),
  },
  {
    name: 'Gemm transB=1 with bias (nn.Linear)',
    params: { x: { shape: [3, 4] }, w: { shape: [5, 4] }, c: { shape: [5] } },
    build: (b, p) => b.gemm(p['x']!, p['w']!, p['c']!, true),
  },
  { name: 'Gemm transB=1 without bias', params: { x: { shape: [3, 4] }, w: { shape: [5, 4] } }, build: (b, p) => b.gemm(p['x']!, p['w']!, undefined, true) },
  {
    name: 'Gemm transB=0 with bias (GPT-2 Conv1D)',
    params: { x: { shape: [3, 4] }, w: { shape: [4, 5] }, c: { shape: [5] } },
    build: (b, p) => b.gemm(p['x']!, p['w']!, p['c']!, false),
  },
  { name: 'Gemm transB=0 without bias', params: { x: { shape: [3, 4] }, w: { shape: [4, 5] } }, build: (b, p) => b.gemm(p['x']!, p['w']!, undefined, false) },
  {
    name: 'Gemm with a [1, N] bias broadcast over rows',
    params: { x: { shape: [3, 4] }, w: { shape: [5, 4] }, c: { shape: [1, 5] } },
    build: (b, p) => b.gemm(p['x']!, p['w']!, p['c']!, true),
  },

  {
    name: 'Reshape with 0 and −1 in the target',
    params: { x: { shape: [2, 3, 4] } },
    build: (b, p) => b.mul(b.reshape(p['x']!, ints(b, [0, -1])), b.reshape(p['x']!, ints(b, [2, 12]))),
  },
  { name: 'Squeeze', params: { x: { shape: [2, 1, 3, 1] } }, build: (b, p) => b.exp(b.squeeze(p['x']!, [1, -1])) },
  { name: 'Unsqueeze', params: { x: { shape: [2, 3] } }, build: (b, p) => b.mul(b.unsqueeze(p['x']!, [0, -1]), b.constant('float32', [1, 1, 3, 1], [1, 2, 3])) },
  { name: 'Transpose with a non-involutive perm [2,0,1] applies the inverse perm', params: { x: { shape: [2, 3, 4] } }, build: (b, p) => b.transpose(p['x']!, [2, 0, 1]) },
  { name: 'Transpose without perm reverses the axes', params: { x: { shape: [2, 3, 4] } }, build: (b, p) => b.node('Transpose', [p['x']!])[0]! },
  {
    name: 'Concat of three inputs and a constant along a middle axis',
    params: { a: { shape: [2, 1, 3] }, b: { shape: [2, 2, 3] }, c: { shape: [2, 3, 3] } },
    build: (b, p) => b.concat([p['a']!, b.constant('float32', [2, 1, 3], [1, 2, 3, 4, 5, 6]), p['b']!, p['c']!], 1),
  },
  { name: 'Concat along a negative axis', params: { a: { shape: [2, 2] }, b: { shape: [2, 3] } }, build: (b, p) => b.concat([p['a']!, p['b']!], -1) },
  {
    name: 'Slice with negative and out-of-range bounds pads the gradient back with zeros',
    params: { x: { shape: [4, 6] } },
    build: (b, p) => b.slice(p['x']!, [1, -4], [100, -1], [0, 1]),
  },
  { name: 'Slice of one axis', params: { x: { shape: [2, 3, 4] } }, build: (b, p) => b.slice(p['x']!, [1], [3], [2]) },
  { name: 'Expand [3,1] → [2,3,4] sums over the expanded axes', params: { x: { shape: [3, 1] } }, build: (b, p) => b.expand(p['x']!, ints(b, [2, 3, 4])) },
  {
    name: 'Gather (embedding lookup) with repeated ids accumulates their rows',
    params: { table: { shape: [5, 3] } },
    build: (b, p) => b.gather(p['table']!, b.constant('int64', [2, 3], [1, 3, 1, 0, 1, 4])),
  },
  {
    name: 'Gather with a scalar index',
    params: { table: { shape: [4, 3] } },
    build: (b, p) => b.gather(p['table']!, b.constant('int64', [], [2])),
  },
  {
    name: 'GatherElements along the last axis with a repeated index',
    params: { x: { shape: [3, 5] } },
    build: (b, p) => b.gatherElements(p['x']!, b.constant('int64', [3, 2], [0, 4, 2, 2, 1, 3]), 1),
  },
  {
    name: 'GatherElements along axis 0',
    params: { x: { shape: [3, 4] } },
    build: (b, p) => b.gatherElements(p['x']!, b.constant('int64', [2, 4], [0, 2, 1, 1, 2, 2, 0, 1]), 0),
  },
  { name: 'Softmax over the last axis', params: { x: { shape: [2, 3, 5], gen: uniform(-2, 2) } }, build: (b, p) => b.softmax(p['x']!, -1) },
  { name: 'Softmax over a middle axis', params: { x: { shape: [2, 3, 4], gen: uniform(-2, 2) } }, build: (b, p) => b.softmax(p['x']!, 1) },
  { name: 'LogSoftmax over the last axis', params: { x: { shape: [2, 3, 5], gen: uniform(-2, 2) } }, build: (b, p) => b.logSoftmax(p['x']!, -1) },
  { name: 'LogSoftmax over axis 0', params: { x: { shape: [3, 4], gen: uniform(-2, 2) } }, build: (b, p) => b.logSoftmax(p['x']!, 0) },
  { name: 'ReduceMean over the last axis, keepdims', params: { x: { shape: [2, 3, 4] } }, build: (b, p) => b.reduceMean(p['x']!, [-1]) },
  { name: 'ReduceMean over axes [0, 2] without keepdims', params: { x: { shape: [2, 3, 4] } }, build: (b, p) => b.reduceMean(p['x']!, [0, 2], false) },
  { name: 'ReduceSum over axis 1 without keepdims', params: { x: { shape: [2, 3, 4] } }, build: (b, p) => b.reduceSum(p['x']!, [1], false) },
  {
    name: 'ReduceSum without an axes input reduces everything',
    params: { x: { shape: [2, 3] } },
    build: (b, p) => b.mul(b.node('ReduceSum', [p['x']!], { keepdims: 0 })[0]!, b.node('ReduceSum', [p['x']!], { keepdims: 0 })[0]!),
  },
  {
    name: 'ReduceSumSquare over axis 1',
    params: { x: { shape: [2, 3, 4] } },
    build: (b, p) => b.node('ReduceSumSquare', [p['x']!], { axes: [1], keepdims: 1 })[0]!,
  },
  {
    name: 'LayerNormalization with scale and bias',
    params: { x: { shape: [2, 3, 5], gen: uniform(-2, 2) }, scale: { shape: [5], gen: uniform(0.5, 1.5) }, bias: { shape: [5] } },
    build: (b, p) => b.layerNorm(p['x']!, p['scale']!, p['bias']!, 1e-5),
  },
  {
    name: 'LayerNormalization without bias',
    params: { x: { shape: [3, 6], gen: uniform(-2, 2) }, scale: { shape: [6], gen: uniform(0.5, 1.5) } },
    build: (b, p) => b.node('LayerNormalization', [p['x']!, p['scale']!], { axis: -1, epsilon: { float: 1e-5 } })[0]!,
  },
];

function rotaryTables(r: Rng, seq: number, headDim: number): { cos: number[]; sin: number[] } {
  const cos: number[] = [];
  const sin: number[] = [];
  const half = headDim / 2;
  const inv = Array.from({ length: half }, (_, i) => Math.pow(10000, (-2 * i) / headDim));
  for (let s = 0; s < seq; s++) {
    for (let k = 0; k < headDim; k++) {
      const angle = (s + 0.3 * r.next()) * inv[k % half]!;
      cos.push(Math.cos(angle));
      sin.push(Math.sin(angle));
    }
  }
  return { cos, sin };
}

const B = 2;
const S = 3;
/** Right-padded masks: the second sequence has one padding token. */
const BODY_INPUTS = {
  input_ids: { shape: [B, S], data: [5, 6, 7, 8, 9, 0] },
  attention_mask: { shape: [B, S], data: [1, 1, 1, 1, 1, 0] },
};

/** The padding token (token 5 = batch 1, position 2) is masked as a key for every query, so its key and value rows get exactly zero gradient. */
function paddingKeyGetsNoGradient(kvWidth: number): NonNullable<Case['after']> {
  return (g, dtype) => {
    for (const k of ['k', 'v']) {
      const row = Array.from(g.get(k)!).slice(5 * kvWidth, 6 * kvWidth);
      assert.ok(row.every((x) => x === 0), `${dtype}: gradient of the padding token's ${k} row is [${row}]`);
    }
  };
}

const BLOCKS: Case[] = [
  {
    name: 'GELU, erf form (layers.ts activation "gelu")',
    params: { x: { shape: [3, 5], gen: uniform(-2, 2) } },
    build: (b, p) => activation(b, p['x']!, 'gelu'),
    dtypes: ['float32'],
  },
  {
    name: 'GELU, tanh form (layers.ts activation "gelu_new")',
    params: { x: { shape: [3, 5], gen: uniform(-2, 2) } },
    build: (b, p) => activation(b, p['x']!, 'gelu_new'),
    dtypes: ['float64', 'float32'],
  },
  {
    name: 'SiLU (layers.ts activation "silu")',
    params: { x: { shape: [3, 5], gen: uniform(-3, 3) } },
    build: (b, p) => activation(b, p['x']!, 'silu'),
    dtypes: ['float64', 'float32'],
  },
  {
    name: 'ReLU and tanh activations as layers.ts builds them',
    params: { x: { shape: [3, 5], gen: awayFromZero(0.2, 1.5) } },
    build: (b, p) => b.add(activation(b, p['x']!, 'relu'), activation(b, p['x']!, 'tanh')),
  },
  {
    name: 'RMSNorm (layers.ts rmsNorm) for input and weight',
    params: { x: { shape: [4, 6], gen: uniform(-2, 2) }, 'n.weight': { shape: [6], gen: uniform(0.5, 1.5) } },
    build: (b, p) => rmsNorm(b, p['x']!, 'n', 6, 1e-6),
    dtypes: ['float64', 'float32'],
  },
  {
    name: 'LayerNorm block (layers.ts layerNorm) after a residual add',
    params: { x: { shape: [4, 6], gen: uniform(-2, 2) }, y: { shape: [4, 6] }, 'n.weight': { shape: [6], gen: uniform(0.5, 1.5) }, 'n.bias': { shape: [6] } },
    build: (b, p) => layerNorm(b, b.add(p['x']!, p['y']!), 'n', 6, 1e-12),
    dtypes: ['float64', 'float32'],
  },
  {
    name: 'linear and conv1d layers (Gemm with weights as layers.ts reads them)',
    params: { x: { shape: [3, 4] }, 'l.weight': { shape: [5, 4] }, 'l.bias': { shape: [5] }, 'c.weight': { shape: [5, 2] }, 'c.bias': { shape: [2] } },
    build: (b, p) => conv1d(b, linear(b, p['x']!, 'l', 4, 5), 'c', 5, 2),
  },
  {
    name: 'rotary embedding pattern (slice, neg, concat, mul, add)',
    params: { x: { shape: [2, 2, 3, 4] } },
    build: (b, p, r) => {
      const t = rotaryTables(r, 3, 4);
      return applyRotary(b, p['x']!, 4, b.constant('float32', [3, 4], t.cos), b.constant('float32', [3, 4], t.sin));
    },
    dtypes: ['float64', 'float32'],
  },
  {
    name: 'masked softmax with an additive float32-min bias gives the padding key exactly zero gradient',
    params: { s: { shape: [2, 1, 3, 3], gen: uniform(-2, 2) } },
    build: (b, p) => {
      // [B, 1, 1, S] bias: the last key of the second sequence is padding.
      const bias = b.constant('float32', [2, 1, 1, 3], [0, 0, 0, 0, 0, FLOAT32_MIN]);
      return b.softmax(b.add(p['s']!, bias), -1);
    },
    dtypes: ['float64', 'float32'],
    after: (g, dtype) => {
      // Scores at the padding key: s[1, 0, q, 2] for each query q.
      for (const j of [11, 14, 17]) assert.ok(g.get('s')![j] === 0, `${dtype}: gradient at the masked score ${j} is ${g.get('s')![j]}`);
    },
  },
  {
    name: 'bidirectional attention (layers.ts attention, BERT: padding mask bias, √d scaling)',
    params: { q: { shape: [B * S, 8] }, k: { shape: [B * S, 8] }, v: { shape: [B * S, 8] } },
    intInputs: BODY_INPUTS,
    build: (b, p) => {
      const inp = bodyInputs(b);
      const bias = attentionBias(b, inp, false);
      return attention(b, inp, p['q']!, p['k']!, p['v']!, bias, { numHeads: 2, numKvHeads: 2, headDim: 4, scaling: { divide: 2 } });
    },
    dtypes: ['float64', 'float32'],
    after: paddingKeyGetsNoGradient(8),
  },
  {
    name: 'causal grouped-query attention with rotary embeddings (layers.ts attention, Llama)',
    params: { q: { shape: [B * S, 8] }, k: { shape: [B * S, 4] }, v: { shape: [B * S, 4] } },
    intInputs: BODY_INPUTS,
    build: (b, p, r) => {
      const inp = bodyInputs(b);
      const bias = attentionBias(b, inp, true);
      const t = rotaryTables(r, S, 4);
      const rotary = { cos: b.constant('float32', [S, 4], t.cos), sin: b.constant('float32', [S, 4], t.sin) };
      return attention(b, inp, p['q']!, p['k']!, p['v']!, bias, { numHeads: 2, numKvHeads: 1, headDim: 4, scaling: { multiply: 0.5 }, rotary });
    },
    dtypes: ['float64', 'float32'],
    after: paddingKeyGetsNoGradient(4),
  },
  {
    name: 'weighted cross-entropy −Σ w·GatherElements(LogSoftmax) as the training loss (zero-weight row included)',
    params: { logits: { shape: [4, 6], gen: uniform(-2, 2) } },
    build: (b, p) => {
      const targets = b.constant('int64', [4], [2, 5, 0, 2]);
      const weights = b.constant('float32', [4], [0.25, 0.5, 0, 0.25]);
      const picked = b.squeeze(b.gatherElements(b.logSoftmax(p['logits']!, -1), b.unsqueeze(targets, [1]), 1), [1]);
      return b.neg(b.reduceSum(b.mul(picked, weights), [0], false));
    },
    dtypes: ['float64', 'float32'],
  },
  {
    name: 'weighted cross-entropy Σ w·SoftmaxCrossEntropyLoss(reduction none), as step.ts writes the training loss',
    params: { logits: { shape: [4, 6], gen: uniform(-2, 2) } },
    build: (b, p) => {
      const targets = b.constant('int64', [4], [2, 5, 0, 2]);
      const weights = b.constant('float32', [4], [0.25, 0.5, 0, 0.25]);
      const [perRow] = b.node('SoftmaxCrossEntropyLoss', [p['logits']!, targets], { reduction: 'none' }, 2);
      return b.reduceSum(b.mul(perRow!, weights), [0], false);
    },
    dtypes: ['float64', 'float32'],
  },
  {
    name: 'SoftmaxCrossEntropyLoss with a gradient through both outputs (loss and log_prob)',
    params: { logits: { shape: [3, 5], gen: uniform(-2, 2) } },
    build: (b, p) => {
      const [perRow, logProb] = b.node('SoftmaxCrossEntropyLoss', [p['logits']!, b.constant('int64', [3], [4, 0, 2])], { reduction: 'none' }, 2);
      return b.add(b.reduceSum(perRow!, [0], false), b.reduceSum(b.mul(logProb!, b.constant('float32', [3, 5], Array.from({ length: 15 }, (_, i) => ((i * 7) % 5) / 5 - 0.4))), [0, 1], false));
    },
    dtypes: ['float64', 'float32'],
  },
  {
    name: 'distillation KL Σ p(log p − log_softmax(x/T)) for student and teacher logits',
    params: { logits: { shape: [3, 5], gen: uniform(-2, 2) }, teacher: { shape: [3, 5], gen: uniform(-2, 2) } },
    build: (b, p) => {
      const invT = b.scalar(1 / 2);
      const logPt = b.logSoftmax(b.mul(p['teacher']!, invT), -1);
      const logQs = b.logSoftmax(b.mul(p['logits']!, invT), -1);
      const klRows = b.reduceSum(b.mul(b.exp(logPt), b.sub(logPt, logQs)), [1], false);
      return b.mul(b.reduceSum(b.mul(klRows, b.constant('float32', [3], [0.5, 0.25, 0.25])), [0], false), b.scalar(4));
    },
    dtypes: ['float64', 'float32'],
  },
];

describe('autodiff: each operator rule matches finite differences', () => {
  for (const c of OPS) {
    for (const dtype of c.dtypes ?? ['float64']) it(`${c.name} [${dtype}]`, () => assertGradientsMatch(c, dtype));
  }
});

describe('autodiff: model blocks match finite differences', () => {
  for (const c of BLOCKS) {
    for (const dtype of c.dtypes ?? ['float64']) it(`${c.name} [${dtype}]`, () => assertGradientsMatch(c, dtype));
  }
});

describe('autodiff: accumulation and unused values', () => {
  const tied: Case = {
    name: 'tied embedding',
    params: { w: { shape: [5, 3] } },
    build: (b, p) => {
      // The input lookup and the output projection share w (HF tie_word_embeddings).
      const h = b.tanh(b.gather(p['w']!, b.constant('int64', [4], [1, 3, 1, 4])));
      return b.gemm(h, p['w']!, undefined, true);
    },
  };

  it('a weight used along two paths (tied embedding and output projection) gets the sum of both gradients', async () => {
    const built = buildCase(tied, new Rng(seedOf(tied.name)));
    // The lookup's scatter-add writes into the projection's gradient instead of into zeros (no Sum node).
    const scatter = built.graph.nodes.find((n) => n.op === 'ScatterND' && n.scope?.startsWith('grad') === true);
    const intoGemm = built.graph.nodes.some((n) => n.op === 'Gemm' && n.scope?.startsWith('grad') === true && n.outputs[0] === scatter?.inputs[0]);
    assert.ok(intoGemm, 'the embedding gradient is scattered into the output projection\'s gradient');
    await assertGradientsMatch(tied, 'float64');
  });

  it('a value the loss does not depend on gets a zero gradient of its shape', async () => {
    const c: Case = {
      name: 'unused input',
      params: { x: { shape: [2, 3] }, unused: { shape: [3, 2] }, dead: { shape: [2, 3] } },
      // `dead` feeds a node whose output nothing reads: live, but no gradient ever reaches it.
      build: (b, p) => {
        b.exp(b.add(p['dead']!, p['x']!));
        return b.tanh(p['x']!);
      },
    };
    const { analytic, fd } = await checkGradients(c, 'float64');
    for (const k of ['unused', 'dead']) {
      const a = analytic.get(k)!;
      assert.equal(a.length, 6, `grad.${k} has the parameter's size`);
      assert.ok(a.every((v) => v === 0), `grad.${k} is zero`);
      assert.ok(fd.get(k)!.every((v) => v === 0), `finite differences of ${k} are zero too`);
    }
    assert.ok(maxAbs(analytic.get('x')!) > 0);
  });

  it('differentiate refuses a loss that depends on none of the requested values', () => {
    const c: Case = { name: 'constant loss', params: { x: { shape: [2] }, y: { shape: [2] } }, build: (b, p) => b.exp(p['x']!) };
    assert.throws(() => buildCase(c, new Rng(1), ['y']), /does not depend on any trained value/);
  });
});

describe('autodiff: coverage', () => {
  it('every operator with a gradient rule is exercised by some case above', () => {
    const covered = new Set<string>();
    for (const c of [...OPS, ...BLOCKS]) for (const op of buildCase(c, new Rng(seedOf(c.name))).forwardOps) covered.add(op);
    const missing = Object.keys(GRAD_RULES).filter((op) => !covered.has(op));
    assert.deepEqual(missing, [], `operators with a rule but no gradient check: ${missing.join(', ')}`);
  });
});
