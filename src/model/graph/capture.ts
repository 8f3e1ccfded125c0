/**
 * Activation capture for calibration. For every chosen linear map y = X·Wᵀ, the graph gains an
 * output with the Gram matrix XᵀX of its input over the real (unpadded) tokens of the batch:
 * GPTQ and SparseGPT need the Hessian H = 2XᵀX/n, Wanda needs ‖X_j‖² = diag(XᵀX). Computing it in
 * the graph keeps the O(tokens·in²) work on ONNX Runtime's GEMM and returns only [in, in] per input.
 * Linear maps that read the same input (q, k, v) share one output.
 *
 * Paired rows (Fair-GPTQ): with `pairs`, batch rows 2i and 2i+1 are the two sentences of a pair,
 * padded to the same length, and a second output per input gives Σ (x₀ − x₁)(x₀ − x₁)ᵀ over their
 * positions (position p of one sentence against position p of the other). With an attention mask,
 * only positions real in both sentences count; without one, every position (pads included).
 */
import type { Graph, Node } from './ir.js';

/**
 * XᵀX is symmetric, so the graph computes only its upper staircase: with the input's n columns cut
 * into blocks of `block`, output i is X[:, i·b : (i+1)·b]ᵀ · X[:, i·b :], rows i·b… of XᵀX from
 * column i·b on ((k+1)/2k of the products of the full matrix for k blocks; ≈ 0.56 for n = 3072).
 * Every entry is the same dot product over the tokens as in the full product (and blocks of at
 * least 128 columns keep ONNX Runtime's K blocking the same), so the numbers do not change; the
 * reader mirrors the strict lower triangle (gramBlocksInto).
 */
export const GRAM_BLOCK = 256;

export interface GramBlock {
  /** Output name of this block: [rows, dim − row] float32. */
  name: string;
  /** First row (and first column) of XᵀX it holds. */
  row: number;
  rows: number;
}

/** The outputs that together hold XᵀX [dim, dim] of one linear input. */
export interface GramOutput {
  dim: number;
  blocks: GramBlock[];
}

export interface GramCaptureGraph {
  graph: Graph;
  /** weight name → the outputs holding XᵀX [in, in] of its input (maps that share an input share the object). */
  grams: Map<string, GramOutput>;
  /** weight name → the outputs holding ΔᵀΔ [in, in], Δ = X(rows 2i) − X(rows 2i+1) (only with `pairs`). */
  pairGrams: Map<string, GramOutput>;
}

export interface PairCapture {
  /** The graph's [batch, seq] input whose second dimension is the sequence length (input_ids). */
  seqOf: string;
}

export interface GramCaptureOptions {
  /** Column block of the upper staircase (default GRAM_BLOCK); Infinity: one full [n, n] product. */
  block?: number;
  /** Input dimension of weights that are not initializers of the graph. */
  dims?: ReadonlyMap<string, number>;
}

/**
 * out += XᵀX from a run's block outputs (`data` by output name): the upper staircase is added as
 * computed; the strict lower triangle outside the diagonal blocks is not touched (call
 * mirrorLower once the sum is complete).
 */
export function addGramBlocks(out: Float64Array, g: GramOutput, data: (name: string) => Float32Array): void {
  const n = g.dim;
  for (const b of g.blocks) {
    const d = data(b.name);
    const w = n - b.row;
    for (let r = 0; r < b.rows; r++) {
      const o = (b.row + r) * n + b.row;
      const s = r * w;
      for (let c = 0; c < w; c++) out[o + c]! += d[s + c]!;
    }
  }
}

/** Copy the upper triangle of the [n, n] matrix onto the entries below the diagonal blocks. */
export function mirrorLower(m: Float64Array, g: GramOutput): void {
  const n = g.dim;
  for (const b of g.blocks) {
    for (let r = b.row + b.rows; r < n; r++) {
      for (let c = b.row; c < b.row + b.rows; c++) m[r * n + c] = m[c * n + r]!;
    }
  }
}

/** The input dimension of a linear node's weight (undefined when the weight is not an initializer). */
function inDimOf(g: Graph, n: Node): number | undefined {
  const w = g.initializers.get(n.inputs[1]!);
  if (w === undefined || w.dims.length !== 2) return undefined;
  return n.op === 'Gemm' && n.attrs['transB'] === 1 ? w.dims[1] : w.dims[0];
}

export function withLinearInputGrams(
  g: Graph,
  weights: readonly string[],
  attentionMaskInput?: string,
  pairs?: PairCapture,
  opts: GramCaptureOptions = {},
): GramCaptureGraph {
  const block = opts.block ?? GRAM_BLOCK;
  const wanted = new Set(weights);
  const grams = new Map<string, GramOutput>();
  const pairGrams = new Map<string, GramOutput>();
  const byValue = new Map<string, GramOutput>();
  const pairByValue = new Map<string, GramOutput>();
  const nodes: Node[] = [...g.nodes];
  const outputs = [...g.outputs];
  const initializers = new Map(g.initializers);
  let k = 0;
  let tokenMask: string | undefined;
  if (attentionMaskInput !== undefined) {
    initializers.set('gram_mask_shape', { type: 'int64', dims: [2], data: BigInt64Array.from([-1n, 1n]) });
    nodes.push({ op: 'Cast', domain: '', inputs: [attentionMaskInput], outputs: ['gram_mask_f'], attrs: { to: 1 } });
    nodes.push({ op: 'Reshape', domain: '', inputs: ['gram_mask_f', 'gram_mask_shape'], outputs: ['gram_token_mask'], attrs: {} });
    tokenMask = 'gram_token_mask';
  }
  const node = (op: string, inputs: string[], attrs: Node['attrs'] = {}): string => {
    const out = `gram_${op.toLowerCase()}_${k++}`;
    nodes.push({ op, domain: '', inputs, outputs: [out], attrs });
    return out;
  };
  const ints = (values: number[]): string => {
    const name = `gram_ints_${k++}`;
    initializers.set(name, { type: 'int64', dims: [values.length], data: BigInt64Array.from(values.map(BigInt)) });
    return name;
  };
  /** Outputs holding vᵀv of the 2-D value v with n columns. */
  const gramOf = (v: string, n: number, prefix: string): GramOutput => {
    if (block >= n) {
      nodes.push({ op: 'MatMul', domain: '', inputs: [node('Transpose', [v], { perm: [1, 0] }), v], outputs: [prefix], attrs: {} });
      outputs.push({ name: prefix, type: 'float32', shape: [n, n] });
      return { dim: n, blocks: [{ name: prefix, row: 0, rows: n }] };
    }
    const blocks: GramBlock[] = [];
    for (let row = 0; row < n; row += block) {
      const rows = Math.min(block, n - row);
      const name = `${prefix}#${row}`;
      const a = node('Slice', [v, ints([row]), ints([row + rows]), ints([1])]); // [tokens, rows]
      const b = row === 0 ? v : node('Slice', [v, ints([row]), ints([n]), ints([1])]); // [tokens, n − row]
      nodes.push({ op: 'Gemm', domain: '', inputs: [a, b], outputs: [name], attrs: { transA: 1 } }); // aᵀ·b
      outputs.push({ name, type: 'float32', shape: [rows, n - row] });
      blocks.push({ name, row, rows });
    }
    return { dim: n, blocks };
  };
  let pairSetup: { seq: string; pairMask?: string } | undefined;
  if (pairs !== undefined) {
    const seq = node('Shape', [pairs.seqOf], { start: 1, end: 2 }); // [S]
    let pairMask: string | undefined;
    if (tokenMask !== undefined) {
      // [B·S, 1] → [B/2, 2, S, 1]; a position counts when it is real in both sentences.
      const m = node('Reshape', [tokenMask, node('Concat', [ints([-1, 2]), seq, ints([1])], { axis: 0 })]);
      const both = node('Mul', [node('Slice', [m, ints([0]), ints([1]), ints([1])]), node('Slice', [m, ints([1]), ints([2]), ints([1])])]);
      pairMask = node('Reshape', [both, ints([-1, 1])]);
    }
    pairSetup = { seq, ...(pairMask !== undefined ? { pairMask } : {}) };
  }
  for (const n of g.nodes) {
    if ((n.op !== 'Gemm' && n.op !== 'MatMul') || !wanted.has(n.inputs[1]!)) continue;
    const x = n.inputs[0]!;
    const dim = inDimOf(g, n) ?? opts.dims?.get(n.inputs[1]!);
    if (dim === undefined) throw new Error(`capture: the input dimension of ${n.inputs[1]!} is unknown (not an initializer; pass it in dims)`);
    let out = byValue.get(x);
    if (out === undefined) {
      let xm = x;
      if (tokenMask !== undefined) {
        xm = `gram_masked_${k++}`;
        nodes.push({ op: 'Mul', domain: '', inputs: [x, tokenMask], outputs: [xm], attrs: {} });
      }
      out = gramOf(xm, dim, `gram/${n.inputs[1]!}`);
      byValue.set(x, out);
    }
    grams.set(n.inputs[1]!, out);
    if (pairSetup !== undefined) {
      let pout = pairByValue.get(x);
      if (pout === undefined) {
        // X [B·S, in] → [B/2, 2, S, in]; Δ = X[:, 0] − X[:, 1] → [B/2·S, in].
        const inDim = node('Shape', [x], { start: 1, end: 2 });
        const xr = node('Reshape', [x, node('Concat', [ints([-1, 2]), pairSetup.seq, inDim], { axis: 0 })]);
        const d4 = node('Sub', [node('Slice', [xr, ints([0]), ints([1]), ints([1])]), node('Slice', [xr, ints([1]), ints([2]), ints([1])])]);
        let d = node('Reshape', [d4, node('Concat', [ints([-1]), inDim], { axis: 0 })]);
        if (pairSetup.pairMask !== undefined) d = node('Mul', [d, pairSetup.pairMask]);
        pout = gramOf(d, dim, `pairgram/${n.inputs[1]!}`);
        pairByValue.set(x, pout);
      }
      pairGrams.set(n.inputs[1]!, pout);
    }
  }
  const missing = weights.filter((w) => !grams.has(w));
  if (missing.length > 0) throw new Error(`capture: no linear node of graph "${g.name}" reads ${missing.join(', ')}`);
  return { graph: { ...g, nodes, outputs, initializers }, grams, pairGrams };
}

/**
 * The graph cut down to what its outputs `keep` need: the other outputs, the nodes that only they
 * need, and the initializers no remaining node reads are dropped; inputs stay (a sequential
 * calibration pass that wants the Grams of a block's first group then runs no more of the block
 * than that group's input). The nodes kept compute what they computed before.
 */
export function keepOutputs(g: Graph, keep: readonly string[]): Graph {
  const wanted = new Set(keep);
  const needed = new Set(keep);
  const nodes: Node[] = [];
  for (let i = g.nodes.length - 1; i >= 0; i--) {
    const n = g.nodes[i]!;
    if (!n.outputs.some((o) => needed.has(o))) continue;
    nodes.push(n);
    for (const x of n.inputs) if (x !== '') needed.add(x);
  }
  nodes.reverse();
  const initializers = new Map([...g.initializers].filter(([name]) => needed.has(name)));
  return {
    ...g,
    nodes,
    initializers,
    outputs: g.outputs.filter((v) => wanted.has(v.name)),
  };
}
