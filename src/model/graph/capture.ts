/**
 * Activation capture for calibration. For every chosen linear map y = X·Wᵀ, the graph gains an
 * output with the Gram matrix XᵀX of its input over the real (unpadded) tokens of the batch:
 * GPTQ and SparseGPT need the Hessian H = 2XᵀX/n, Wanda needs ‖X_j‖² = diag(XᵀX). Computing it in
 * the graph keeps the O(tokens·in²) work on ONNX Runtime's GEMM and returns only [in, in] per input.
 * Linear maps that read the same input (q, k, v) share one output.
 */
import type { Graph, Node } from './ir.js';

export interface GramCaptureGraph {
  graph: Graph;
  /** weight name → output name of XᵀX [in, in] for its input. */
  grams: Map<string, string>;
}

/**
 * `attentionMaskInput` names the graph's int64 [batch, seq] mask input whose flattening gives the
 * rows of the linear inputs (body graphs); undefined when every row is real (head graphs fed
 * chosen rows).
 */
export function withLinearInputGrams(g: Graph, weights: readonly string[], attentionMaskInput?: string): GramCaptureGraph {
  const wanted = new Set(weights);
  const grams = new Map<string, string>();
  const byValue = new Map<string, string>();
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
  }
  const missing = weights.filter((w) => !grams.has(w));
  if (missing.length > 0) throw new Error(`capture: no linear node of graph "${g.name}" reads ${missing.join(', ')}`);
  return { graph: { ...g, nodes, outputs, initializers }, grams };
}
