/**
 * Serialise a Dikē Graph to an ONNX ModelProto (protobuf bytes), using the generated protobuf
 * bindings of `onnx-proto`. Weights go in as initializers with raw little-endian data.
 */
import onnxProto from 'onnx-proto';
import type { AttrValue, Graph, InitTensor, ValueInfo } from './ir.js';
import { OPSET } from './ir.js';
import { onnxTypeCode } from './build.js';

const { onnx } = onnxProto;

/** IR version 8 (ONNX 1.10+), which onnxruntime 1.30 reads. */
const IR_VERSION = 8;

function tensorProto(name: string, t: InitTensor): onnxProto.onnx.ITensorProto {
  const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  return { name, dims: t.dims, dataType: onnxTypeCode(t.type), rawData: bytes };
}

function valueInfo(v: ValueInfo): onnxProto.onnx.IValueInfoProto {
  return {
    name: v.name,
    type: {
      tensorType: {
        elemType: onnxTypeCode(v.type),
        shape: { dim: v.shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

function attribute(name: string, v: AttrValue): onnxProto.onnx.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof v === 'number') return { name, type: T.INT, i: v };
  if (typeof v === 'string') return { name, type: T.STRING, s: new TextEncoder().encode(v) };
  if (Array.isArray(v)) return { name, type: T.INTS, ints: v };
  if ('float' in v) return { name, type: T.FLOAT, f: v.float };
  if ('floats' in v) return { name, type: T.FLOATS, floats: v.floats };
  return { name, type: T.TENSOR, t: tensorProto(name, v) };
}

export function graphToOnnx(g: Graph): Uint8Array {
  const opsetImport: onnxProto.onnx.IOperatorSetIdProto[] = [{ domain: '', version: OPSET }];
  for (const [domain, version] of g.domains) opsetImport.push({ domain, version });
  const model: onnxProto.onnx.IModelProto = {
    irVersion: IR_VERSION,
    producerName: 'dike',
    opsetImport,
    graph: {
      name: g.name,
      input: g.inputs.map(valueInfo),
      output: g.outputs.map(valueInfo),
      initializer: [...g.initializers].map(([name, t]) => tensorProto(name, t)),
      node: g.nodes.map((n, i) => ({
        name: `${n.scope ?? ''}#${i}:${n.op}`,
        opType: n.op,
        domain: n.domain,
        input: n.inputs,
        output: n.outputs,
        attribute: Object.entries(n.attrs).map(([k, v]) => attribute(k, v)),
      })),
    },
  };
  return onnx.ModelProto.encode(model).finish();
}
