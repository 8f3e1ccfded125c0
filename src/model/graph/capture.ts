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

export interface GramCaptureGraph {
  graph: Graph;
  /** weight name → output name of XᵀX [in, in] for its input. */
  grams: Map<string, string>;
  /** weight name → output name of ΔᵀΔ [in, in], Δ = X(rows 2i) − X(rows 2i+1) (only with `pairs`). */
  pairGrams: Map<string, string>;
}

export interface PairCapture {
  /** The graph's [batch, seq] input whose second dimension is the sequence length (input_ids). */
  seqOf: string;
}

/**
 * `attentionMaskInput` names the graph's int64 [batch, seq] mask input whose flattening gives the
 * rows of the linear inputs (body graphs); undefined when every row is real (head graphs fed
 * chosen rows).
 */
export function withLinearInputGrams(g: Graph, weights: readonly string[], attentionMaskInput?: string, pairs?: PairCapture): GramCaptureGraph {
  const wanted = new Set(weights);
  const grams = new Map<string, string>();
  const pairGrams = new Map<string, string>();
  const byValue = new Map<string, string>();
  const pairByValue = new Map<string, string>();
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
    let out = byValue.get(x);
    if (out === undefined) {
      out = `gram/${n.inputs[1]!}`;
      byValue.set(x, out);
      let xm = x;
      if (tokenMask !== undefined) {
        xm = `gram_masked_${k++}`;
        nodes.push({ op: 'Mul', domain: '', inputs: [x, tokenMask], outputs: [xm], attrs: {} });
      }
      const xt = `gram_t_${k++}`;
      nodes.push({ op: 'Transpose', domain: '', inputs: [xm], outputs: [xt], attrs: { perm: [1, 0] } });
      nodes.push({ op: 'MatMul', domain: '', inputs: [xt, xm], outputs: [out], attrs: {} });
      outputs.push({ name: out, type: 'float32', shape: ['in', 'in'] });
    }
    grams.set(n.inputs[1]!, out);
    if (pairSetup !== undefined) {
      let pout = pairByValue.get(x);
      if (pout === undefined) {
        pout = `pairgram/${n.inputs[1]!}`;
        pairByValue.set(x, pout);
        // X [B·S, in] → [B/2, 2, S, in]; Δ = X[:, 0] − X[:, 1] → [B/2·S, in].
        const inDim = node('Shape', [x], { start: 1, end: 2 });
        const xr = node('Reshape', [x, node('Concat', [ints([-1, 2]), pairSetup.seq, inDim], { axis: 0 })]);
        const d4 = node('Sub', [node('Slice', [xr, ints([0]), ints([1]), ints([1])]), node('Slice', [xr, ints([1]), ints([2]), ints([1])])]);
        let d = node('Reshape', [d4, node('Concat', [ints([-1]), inDim], { axis: 0 })]);
        if (pairSetup.pairMask !== undefined) d = node('Mul', [d, pairSetup.pairMask]);
        nodes.push({ op: 'MatMul', domain: '', inputs: [node('Transpose', [d], { perm: [1, 0] }), d], outputs: [pout], attrs: {} });
        outputs.push({ name: pout, type: 'float32', shape: ['in', 'in'] });
      }
      pairGrams.set(n.inputs[1]!, pout);
    }
  }
  const missing = weights.filter((w) => !grams.has(w));
  if (missing.length > 0) throw new Error(`capture: no linear node of graph "${g.name}" reads ${missing.join(', ')}`);
  return { graph: { ...g, nodes, outputs, initializers }, grams, pairGrams };
}
