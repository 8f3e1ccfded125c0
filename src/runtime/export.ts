/**
 * A model as standalone ONNX files, in either execution mode, loadable by any onnxruntime (the
 * deployed form needs ORT's com.microsoft contrib ops, present in every CPU build):
 *   body  input_ids, attention_mask int64 [batch, seq] → hidden.0 … hidden.L float [batch, seq, hidden]
 *   head  rows float [n, hidden] → logits float [n, outputs]
 * Two files, as the runtime runs them, so that a caller projects onto the vocabulary only at the
 * positions it needs (the head of a masked LM at every position costs more than the body).
 */
import { DikeError } from '../errors.js';
import { graphToOnnx } from '../model/graph/to-onnx.js';
import type { Graph } from '../model/graph/ir.js';
import { buildBodyGraph, buildHeadGraph, executionPlan, planGraph, type ExecutionPlan, type ModelLike, type RuntimeOptions } from './session.js';

export interface ExportedModel {
  body: Uint8Array;
  head: Uint8Array;
  plan: ExecutionPlan;
  /** Linear-map kernels in body + head: Gemm, MatMulNBits, DynamicQuantizeMatMul, MatMulInteger. */
  kernels: Record<string, number>;
}

/** protobuf's hard limit on one message; larger models would need ONNX external data. */
const PROTOBUF_LIMIT = 2 ** 31 - 1;

function serialise(g: Graph, what: string, dir: string): Uint8Array {
  let bytes = 0;
  for (const t of g.initializers.values()) bytes += t.data.byteLength;
  if (bytes >= PROTOBUF_LIMIT) throw new DikeError(dir, what, `${(bytes / 2 ** 30).toFixed(1)} GiB of weights exceed protobuf's 2 GiB limit for one ONNX file (external data is not written yet)`);
  return graphToOnnx(g);
}

export function exportOnnx(m: ModelLike, opts: Pick<RuntimeOptions, 'execution' | 'quantized' | 'deploy'> = {}): ExportedModel {
  const plan = executionPlan(m, opts);
  const body = planGraph(buildBodyGraph(m), plan);
  const head = planGraph(buildHeadGraph(m, 'logits'), plan);
  const kernels: Record<string, number> = {};
  for (const g of [body, head]) {
    for (const n of g.nodes) {
      if (['Gemm', 'MatMulNBits', 'DynamicQuantizeMatMul', 'MatMulInteger'].includes(n.op)) kernels[n.op] = (kernels[n.op] ?? 0) + 1;
    }
  }
  return { body: serialise(body, 'body graph', m.dir), head: serialise(head, 'head graph', m.dir), plan, kernels };
}
