/**
 * Deployed execution: every linear map whose weight has an integer form (QuantState) runs on ONNX
 * Runtime's real integer kernels instead of a float Gemm over the dequantized weights.
 *
 *   weight-only (2, 4 or 8 bits, any grouping that is whole 16-column blocks)
 *     Gemm(x, W, b) → MatMulNBits(x, B, scales[, zero_points]) + Add(b)       (com.microsoft)
 *     computes y = x · Ŵᵀ + b with Ŵ[n, k] = scale[n, k / block] · (code[n, k] − zero[n, k / block]):
 *     the codes stay packed in memory and are dequantized inside the kernel. With accuracy_level 0
 *     (default) the product is a float32 GEMM, so it equals simulated execution (the float Gemm over
 *     the same Ŵ) up to float summation order (bit-identical on the tiny models). accuracy_level 4
 *     also quantizes x to int8 per block (faster, and no longer the simulated function).
 *     Speed (onnxruntime-node 1.30, x86-64, one thread): 4-bit has a fast float kernel; 2- and 8-bit
 *     at accuracy_level 0 fall back to a slow path (≈ 25× slower than the fp32 Gemm on 4096²) and are
 *     fast only at accuracy_level 4.
 *
 *   dynamic int8 (QuantState.dynamicActivations: 8-bit, symmetric, one group per row)
 *     Gemm(x, W, b) → DynamicQuantizeMatMul(x, Bᵢ₈, scale, −, b)                 (com.microsoft)
 *     computes, as ONNX Runtime's quantize_dynamic models do: x is quantized per tensor at run time
 *     as DynamicQuantizeLinear does (s = (max(0, max x) − min(0, min x)) / 255, z = round(−min/s),
 *     q = clamp(round(x/s) + z, 0, 255), rounding half to even), then
 *     y[m, n] = s · scale[n] · Σₖ (q[m, k] − z) · Bᵢ₈[k, n] + b[n], accumulated exactly in int32,
 *     with Bᵢ₈ = code − 128 (our uint8 codes with zero point 128 are int8 codes shifted by 128).
 *     `int8Kernel: 'MatMulInteger'` writes the same function as the standard-domain chain
 *     DynamicQuantizeLinear → MatMulInteger → Cast → Mul(s · scale) → Add(b) (which ORT's optimizer
 *     fuses back into DynamicQuantizeMatMul). On x86 CPUs without VNNI, ORT's uint8 × int8 kernel
 *     (VPMADDUBSW) can saturate pairs of products in int16, as ORT documents for quantize_dynamic;
 *     with VNNI (and on the machine the tests were measured on) the int32 sums are exact.
 *     Simulated execution of such a matrix fake-quantizes x with DynamicQuantizeLinear →
 *     DequantizeLinear before the float Gemm (`fakeQuantizeActivations`), so the two modes agree up
 *     to float rounding. Per-tensor quantization makes a row's output depend on the other rows of
 *     the batch (padding included): dynamic-int8 scores are not batch-invariant.
 *
 * Refused, with the reason: 3-bit codes (MatMulNBits in onnxruntime 1.30 has 2-, 4- and 8-bit
 * kernels only), groups that are not a whole number of 16-column blocks (MatMulNBits blocks are
 * 16, 32, 64, 128 or 256 columns; a group of g columns becomes g / block blocks sharing its scale),
 * and dynamic activations on asymmetric or grouped weights (DynamicQuantizeMatMul takes one int8
 * scale per output column). K need not be a multiple of the block: the last block of a row is padded
 * with code 0, which the kernel ignores beyond K.
 *
 * Input layouts (ONNX Runtime ContribOperators.md, checked against onnxruntime-node 1.30):
 *   MatMulNBits  B uint8 [N, ⌈K/block⌉, block·bits/8], codes along K packed low bits first
 *                (4 bits: element 2j in the low nibble of byte j); scales float [N·⌈K/block⌉];
 *                zero_points uint8 [N·⌈⌈K/block⌉·bits/8⌉], packed the same way, each row padded to
 *                a whole byte; absent = 2^(bits−1), which is exactly our symmetric zero point.
 *   DynamicQuantizeMatMul  B int8 [K, N]; b_scale float [N]; b_zero_point absent (= 0); bias [N].
 *
 * This module depends only on model/ (graph IR, safetensors, architecture facts), so the runtime can
 * use it without depending on the rest of compress/.
 */
import { closeSync, existsSync, openSync, readSync } from 'node:fs';
import path from 'node:path';
import { DikeError } from '../errors.js';
import type { LinearInfo } from '../model/arch/types.js';
import type { Graph, InitTensor, Node } from '../model/graph/ir.js';
import { MAX_HEADER_BYTES, readSafetensors, toFloat32 } from '../model/safetensors.js';
import type { QuantState } from '../model/quant.js';

export const QUANTIZATION_FILE = 'quantization.safetensors';

/** Code widths MatMulNBits has CPU kernels for (onnxruntime 1.30). */
export const NBITS_WIDTHS: readonly number[] = [2, 4, 8];
/** Block sizes MatMulNBits accepts (onnxruntime 1.30). */
export const NBITS_BLOCKS: readonly number[] = [16, 32, 64, 128, 256];

export type Execution = 'simulated' | 'deployed';
export const EXECUTIONS: readonly Execution[] = ['simulated', 'deployed'];

export interface DeployOptions {
  /**
   * MatMulNBits accuracy_level: 0 (default; float32 compute, the simulated function), 1 fp32,
   * 2 fp16, 3 bf16, 4 int8 activations per block (ORT's fast path; changes the numbers).
   */
  accuracyLevel?: number;
  /** Kernel for dynamic-int8 matrices: the fused contrib op (default) or the standard-domain chain. */
  int8Kernel?: 'DynamicQuantizeMatMul' | 'MatMulInteger';
}

// ---- packing ------------------------------------------------------------------------------------

/**
 * Pack `count` codes of `bits` bits each (bits divides 8), read from values[from …], into bytes
 * starting at out[at], low bits first: code i occupies bits (i·bits mod 8) … of byte ⌊i·bits/8⌋.
 * Bytes are OR-ed into `out`, which must be zero there.
 */
export function packCodes(values: ArrayLike<number>, from: number, count: number, bits: number, out: Uint8Array, at: number): void {
  const perByte = 8 / bits;
  for (let i = 0; i < count; i++) {
    out[at + Math.floor(i / perByte)] |= values[from + i]! << ((i % perByte) * bits);
  }
}

/** The weights of one MatMulNBits node. */
export interface NBitsWeights {
  K: number;
  N: number;
  bits: number;
  blockSize: number;
  /** Blocks per output row, ⌈K / blockSize⌉. */
  blocks: number;
  /** [N, blocks, blockSize·bits/8] */
  B: Uint8Array;
  /** [N·blocks] */
  scales: Float32Array;
  /** [N·⌈blocks·bits/8⌉], or undefined when every zero point is 2^(bits−1) (the kernel's default). */
  zeroPoints?: Uint8Array;
}

function fail(file: string, weight: string, problem: string): never {
  throw new DikeError(file, `tensor "${weight}"`, problem);
}

/**
 * The MatMulNBits block for a state: a group of g columns must be a whole number of blocks. With one
 * group per row any block works (all blocks repeat the row's scale): the largest that divides K, or
 * else the smallest that covers K (one padded block), or else 256. Otherwise the largest block
 * dividing g.
 */
export function nbitsBlockSize(s: Pick<QuantState, 'groupSize' | 'cols'>, file: string, weight: string): number {
  const g = Math.min(s.groupSize, s.cols);
  if (g >= s.cols) {
    const dividing = NBITS_BLOCKS.filter((b) => s.cols % b === 0);
    if (dividing.length > 0) return dividing[dividing.length - 1]!;
    return NBITS_BLOCKS.find((b) => b >= s.cols) ?? NBITS_BLOCKS[NBITS_BLOCKS.length - 1]!;
  }
  const dividing = NBITS_BLOCKS.filter((b) => g % b === 0);
  if (dividing.length === 0) {
    fail(file, weight, `group size ${g} has no MatMulNBits kernel: blocks are ${NBITS_BLOCKS.join(', ')} columns and a group must be a whole number of blocks (use a group size that is a multiple of 16, or per-channel)`);
  }
  return dividing[dividing.length - 1]!;
}

/** The MatMulNBits form of a weight-only integer matrix (codes and scales regrouped into blocks). */
export function toNBits(s: QuantState, file: string, weight: string): NBitsWeights {
  if (!NBITS_WIDTHS.includes(s.bits)) {
    fail(file, weight, `${s.bits}-bit codes have no ONNX Runtime kernel: MatMulNBits (onnxruntime 1.30) supports ${NBITS_WIDTHS.join(', ')} bits; run this model simulated`);
  }
  const K = s.cols;
  const N = s.rows;
  const bits = s.bits;
  const blockSize = nbitsBlockSize(s, file, weight);
  const blocks = Math.ceil(K / blockSize);
  const blob = (blockSize * bits) / 8;
  const g = Math.min(s.groupSize, K);
  const groups = Math.ceil(K / g);
  const B = new Uint8Array(N * blocks * blob);
  const scales = new Float32Array(N * blocks);
  const zeroRow = Math.ceil((blocks * bits) / 8);
  const zeroPoints = new Uint8Array(N * zeroRow);
  const blockZeros = new Uint8Array(blocks);
  const defaultZero = 2 ** (bits - 1);
  let allDefault = true;
  for (let n = 0; n < N; n++) {
    for (let j = 0; j < blocks; j++) {
      const k0 = j * blockSize;
      packCodes(s.codes, n * K + k0, Math.min(blockSize, K - k0), bits, B, (n * blocks + j) * blob);
      const grp = n * groups + Math.floor(k0 / g);
      scales[n * blocks + j] = s.scales[grp]!;
      blockZeros[j] = s.zeros[grp]!;
      if (blockZeros[j] !== defaultZero) allDefault = false;
    }
    packCodes(blockZeros, 0, blocks, bits, zeroPoints, n * zeroRow);
  }
  return { K, N, bits, blockSize, blocks, B, scales, ...(allDefault ? {} : { zeroPoints }) };
}

/** The weights of one DynamicQuantizeMatMul node: int8 B [K, N] and one scale per output column. */
export interface Int8Weights {
  K: number;
  N: number;
  B: Int8Array;
  scales: Float32Array;
}

export function toInt8(s: QuantState, file: string, weight: string): Int8Weights {
  const groups = Math.ceil(s.cols / s.groupSize);
  if (s.bits !== 8 || groups !== 1 || !s.zeros.every((z) => z === 128)) {
    fail(file, weight, `dynamic int8 (DynamicQuantizeMatMul) needs 8-bit symmetric codes with one scale per output channel, found ${s.bits}-bit, ${groups} group${groups === 1 ? '' : 's'} per row, ${s.symmetric ? 'symmetric' : 'asymmetric'}`);
  }
  const K = s.cols;
  const N = s.rows;
  const B = new Int8Array(K * N);
  for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) B[k * N + n] = s.codes[n * K + k]! - 128;
  return { K, N, B, scales: s.scales.slice() };
}

// ---- graph rewrites -----------------------------------------------------------------------------

interface LinearNode {
  index: number;
  node: Node;
  weight: string;
  /** [N, K] (transB = 1, nn.Linear) or [K, N] (transB = 0, GPT-2 Conv1D) */
  transB: boolean;
}

/** The Gemm nodes of a graph that multiply by a quantized weight initializer. */
function quantizedGemms(g: Graph, quantized: ReadonlyMap<string, QuantState>, file: string): LinearNode[] {
  const out: LinearNode[] = [];
  g.nodes.forEach((node, index) => {
    if (node.op !== 'Gemm' || node.domain !== '') return;
    const weight = node.inputs[1]!;
    const s = quantized.get(weight);
    const w = g.initializers.get(weight);
    if (s === undefined || w === undefined) return;
    const { transA = 0, transB = 0, alpha, beta } = node.attrs as Record<string, unknown>;
    if (transA !== 0 || (alpha !== undefined && (alpha as { float: number }).float !== 1) || (beta !== undefined && (beta as { float: number }).float !== 1)) {
      fail(file, weight, `its Gemm in graph "${g.name}" has transA/alpha/beta, which the integer kernels do not take`);
    }
    const [N, K] = transB === 1 ? w.dims : [w.dims[1], w.dims[0]];
    if (w.dims.length !== 2 || N !== s.rows || K !== s.cols) {
      fail(file, weight, `integer form is [${s.rows}, ${s.cols}] (out, in) but the graph's weight is [${w.dims.join(', ')}]${transB === 1 ? '' : ' (in, out)'}`);
    }
    out.push({ index, node, weight, transB: transB === 1 });
  });
  return out;
}

/** Drop initializers that no node reads any more and that are not graph outputs. */
function pruneInitializers(g: Graph, candidates: Iterable<string>): void {
  const read = new Set<string>();
  for (const n of g.nodes) for (const i of n.inputs) read.add(i);
  for (const o of g.outputs) read.add(o.name);
  for (const c of candidates) if (!read.has(c)) g.initializers.delete(c);
}

export interface DeployedGraph {
  graph: Graph;
  /** Count of rewritten linear maps per kernel. */
  kernels: Record<string, number>;
  /** Quantized weights the graph multiplies by (rewritten). */
  weights: string[];
}

/**
 * Replace every Gemm over a quantized weight by integer kernels (see the file comment). Weights
 * without an integer form stay float Gemms; float initializers no node reads any more are dropped.
 * `file` names the source of the integer forms in errors.
 */
export function deployGraph(g: Graph, quantized: ReadonlyMap<string, QuantState>, opts: DeployOptions = {}, file = QUANTIZATION_FILE): DeployedGraph {
  const accuracyLevel = opts.accuracyLevel ?? 0;
  if (!Number.isInteger(accuracyLevel) || accuracyLevel < 0 || accuracyLevel > 4) throw new DikeError(file, 'accuracy level', `expected 0…4, found ${accuracyLevel}`);
  const int8Kernel = opts.int8Kernel ?? 'DynamicQuantizeMatMul';
  const targets = quantizedGemms(g, quantized, file);
  const out: Graph = { ...g, nodes: [], initializers: new Map(g.initializers), domains: new Map(g.domains) };
  const kernels: Record<string, number> = {};
  const replaced = new Map<number, Node[]>();
  const made = new Set<string>();
  const init = (name: string, t: InitTensor): string => {
    if (!made.has(name)) {
      if (out.initializers.has(name)) throw new DikeError(file, `tensor "${name}"`, 'name already used in the graph');
      out.initializers.set(name, t);
      made.add(name);
    }
    return name;
  };
  for (const t of targets) {
    const s = quantized.get(t.weight)!;
    const [x, , bias] = t.node.inputs;
    const y = t.node.outputs[0]!;
    const nodes: Node[] = [];
    const scope = t.node.scope !== undefined ? { scope: t.node.scope } : {};
    const node = (op: string, inputs: string[], outputs: string[], attrs: Node['attrs'] = {}, domain = ''): void => {
      nodes.push({ op, domain, inputs, outputs, attrs, ...scope });
    };
    if (s.dynamicActivations) {
      const q = toInt8(s, file, t.weight);
      const B = init(`${t.weight}.int8`, { type: 'int8', dims: [q.K, q.N], data: q.B });
      const scale = init(`${t.weight}.scale`, { type: 'float32', dims: [q.N], data: q.scales });
      if (int8Kernel === 'DynamicQuantizeMatMul') {
        node('DynamicQuantizeMatMul', bias === undefined ? [x!, B, scale] : [x!, B, scale, '', bias], [y], {}, 'com.microsoft');
        out.domains.set('com.microsoft', 1);
      } else {
        const [qx, sx, zx] = [`${y}/x.q`, `${y}/x.scale`, `${y}/x.zero`];
        node('DynamicQuantizeLinear', [x!], [qx, sx, zx]);
        node('MatMulInteger', [qx, B, zx], [`${y}/acc`]);
        node('Cast', [`${y}/acc`], [`${y}/acc.f`], { to: 1 });
        node('Mul', [sx, scale], [`${y}/scale`]);
        node('Mul', [`${y}/acc.f`, `${y}/scale`], bias === undefined ? [y] : [`${y}/nobias`]);
        if (bias !== undefined) node('Add', [`${y}/nobias`, bias], [y]);
      }
      kernels[int8Kernel] = (kernels[int8Kernel] ?? 0) + 1;
    } else {
      const q = toNBits(s, file, t.weight);
      const blob = (q.blockSize * q.bits) / 8;
      const B = init(`${t.weight}.q${q.bits}`, { type: 'uint8', dims: [q.N, q.blocks, blob], data: q.B });
      const scales = init(`${t.weight}.scales`, { type: 'float32', dims: [q.N * q.blocks], data: q.scales });
      const inputs = [x!, B, scales];
      if (q.zeroPoints !== undefined) inputs.push(init(`${t.weight}.zero_points`, { type: 'uint8', dims: [q.zeroPoints.length], data: q.zeroPoints }));
      const attrs = { K: q.K, N: q.N, bits: q.bits, block_size: q.blockSize, accuracy_level: accuracyLevel };
      node('MatMulNBits', inputs, [bias === undefined ? y : `${y}/nobias`], attrs, 'com.microsoft');
      if (bias !== undefined) node('Add', [`${y}/nobias`, bias], [y]);
      out.domains.set('com.microsoft', 1);
      kernels['MatMulNBits'] = (kernels['MatMulNBits'] ?? 0) + 1;
    }
    replaced.set(t.index, nodes);
  }
  g.nodes.forEach((n, i) => out.nodes.push(...(replaced.get(i) ?? [n])));
  pruneInitializers(out, targets.map((t) => t.weight));
  return { graph: out, kernels, weights: [...new Set(targets.map((t) => t.weight))] };
}

/**
 * Simulated dynamic int8: before every Gemm over a weight named in `dynamic`, quantize its
 * input per tensor and dequantize it again (DynamicQuantizeLinear → DequantizeLinear), so the float
 * Gemm sees exactly the activations DynamicQuantizeMatMul multiplies. Gemms reading the same input
 * share one fake-quantized copy.
 */
export function fakeQuantizeActivations(g: Graph, dynamic: ReadonlySet<string>): Graph {
  const nodes: Node[] = [];
  const copies = new Map<string, string>();
  let changed = false;
  for (const n of g.nodes) {
    if (n.op !== 'Gemm' || n.domain !== '' || !g.initializers.has(n.inputs[1]!) || !dynamic.has(n.inputs[1]!)) {
      nodes.push(n);
      continue;
    }
    const x = n.inputs[0]!;
    let xh = copies.get(x);
    if (xh === undefined) {
      xh = `${x}/fakequant`;
      const scope = n.scope !== undefined ? { scope: n.scope } : {};
      nodes.push({ op: 'DynamicQuantizeLinear', domain: '', inputs: [x], outputs: [`${xh}.q`, `${xh}.scale`, `${xh}.zero`], attrs: {}, ...scope });
      nodes.push({ op: 'DequantizeLinear', domain: '', inputs: [`${xh}.q`, `${xh}.scale`, `${xh}.zero`], outputs: [xh], attrs: {}, ...scope });
      copies.set(x, xh);
    }
    nodes.push({ ...n, inputs: [xh, ...n.inputs.slice(1)] });
    changed = true;
  }
  return changed ? { ...g, nodes } : g;
}

// ---- the sidecar --------------------------------------------------------------------------------

/** What the header of quantization.safetensors says of one matrix (no codes read). */
export type QuantizedInfo = Pick<QuantState, 'bits' | 'groupSize' | 'symmetric' | 'rows' | 'cols' | 'dynamicActivations'>;

/**
 * The header of a safetensors file only: tensor dtypes and shapes, and metadata. The sidecar holds a
 * byte per weight, so simulated runs and `inspect`, which need only this, never read the codes.
 */
function readHeader(file: string): { metadata: Record<string, string>; tensors: Map<string, { dtype: string; shape: number[] }> } {
  const fd = openSync(file, 'r');
  try {
    const len = Buffer.alloc(8);
    if (readSync(fd, len, 0, 8, 0) !== 8) throw new DikeError(file, 'header', 'file is too short for the 8-byte header length');
    const n = len.readBigUInt64LE(0);
    if (n === 0n || n > BigInt(MAX_HEADER_BYTES)) throw new DikeError(file, 'header', `header length ${n} is not in 1…${MAX_HEADER_BYTES}`);
    const bytes = Buffer.alloc(Number(n));
    if (readSync(fd, bytes, 0, bytes.length, 8) !== bytes.length) throw new DikeError(file, 'header', 'header runs past the end of the file');
    let header: Record<string, unknown>;
    try {
      header = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
    } catch (e) {
      throw new DikeError(file, 'header', `not valid JSON (${(e as Error).message})`);
    }
    const metadata = (header['__metadata__'] ?? {}) as Record<string, string>;
    const tensors = new Map<string, { dtype: string; shape: number[] }>();
    for (const [k, v] of Object.entries(header)) if (k !== '__metadata__') tensors.set(k, v as { dtype: string; shape: number[] });
    return { metadata, tensors };
  } finally {
    closeSync(fd);
  }
}

/** Validate one matrix's metadata and tensor shapes (shared by the header and the full readers). */
function matrixInfo(file: string, name: string, metadata: Record<string, string>, tensors: Map<string, { dtype: string; shape: readonly number[] }>): QuantizedInfo {
  const place = `"${name}"`;
  const raw = metadata[name];
  if (typeof raw !== 'string') throw new DikeError(file, place, 'codes without metadata {bits, group_size, symmetric}');
  let meta: Record<string, unknown>;
  try {
    meta = JSON.parse(raw) as Record<string, unknown>;
  } catch {
    throw new DikeError(file, `metadata ${place}`, `not JSON: ${raw.slice(0, 80)}`);
  }
  const bits = meta['bits'];
  const groupSize = meta['group_size'];
  if (!Number.isInteger(bits) || (bits as number) < 1 || (bits as number) > 8) throw new DikeError(file, `metadata ${place}`, `bits must be an integer in 1…8, found ${JSON.stringify(bits)}`);
  if (!Number.isInteger(groupSize) || (groupSize as number) < 1) throw new DikeError(file, `metadata ${place}`, `group_size must be a positive integer, found ${JSON.stringify(groupSize)}`);
  const codes = tensors.get(`${name}.codes`)!;
  if (codes.dtype !== 'U8' || !Array.isArray(codes.shape) || codes.shape.length !== 2) throw new DikeError(file, `tensor "${name}.codes"`, `expected U8 [out, in], found ${codes.dtype} [${codes.shape}]`);
  const [rows, cols] = codes.shape as [number, number];
  const groups = Math.ceil(cols / (groupSize as number));
  for (const [suffix, dtype] of [['scales', 'F32'], ['zeros', 'U8']] as const) {
    const t = tensors.get(`${name}.${suffix}`);
    if (t === undefined) throw new DikeError(file, `tensor "${name}.${suffix}"`, 'missing');
    if (t.dtype !== dtype || !Array.isArray(t.shape) || t.shape.length !== 2 || t.shape[0] !== rows || t.shape[1] !== groups) {
      throw new DikeError(file, `tensor "${name}.${suffix}"`, `expected ${dtype} [${rows}, ${groups}] for codes [${rows}, ${cols}] in groups of ${groupSize}, found ${t.dtype} [${t.shape.join(', ')}]`);
    }
  }
  const info: QuantizedInfo = { bits: bits as number, groupSize: Math.min(groupSize as number, cols), symmetric: meta['symmetric'] === true, rows, cols };
  if (meta['dynamic_activations'] === true) info.dynamicActivations = true;
  return info;
}

function matrixNames(tensors: Iterable<string>): string[] {
  return [...tensors].filter((k) => k.endsWith('.codes')).map((k) => k.slice(0, -'.codes'.length));
}

/**
 * What `quantization.safetensors` in a model directory says of each matrix, from the file's header
 * alone (bits, group size, symmetry, shape, dynamic activations). Undefined when there is no file.
 */
export function readQuantizationInfo(dir: string): Map<string, QuantizedInfo> | undefined {
  const file = path.join(dir, QUANTIZATION_FILE);
  if (!existsSync(file)) return undefined;
  const { metadata, tensors } = readHeader(file);
  return new Map(matrixNames(tensors.keys()).map((name) => [name, matrixInfo(file, name, metadata, tensors)]));
}

/**
 * Read `quantization.safetensors` (written by `writeCompressed`) from a model directory: per weight
 * `<w>.codes` U8 [out, in], `<w>.scales` F32 [out, groups], `<w>.zeros` U8 [out, groups], and
 * metadata `<w>` = JSON {bits, group_size, symmetric, dynamic_activations?}. Undefined when the
 * directory has no such file.
 */
export function readQuantization(dir: string): Map<string, QuantState> | undefined {
  const file = path.join(dir, QUANTIZATION_FILE);
  if (!existsSync(file)) return undefined;
  const st = readSafetensors(file);
  const out = new Map<string, QuantState>();
  for (const name of matrixNames(st.tensors.keys())) {
    const info = matrixInfo(file, name, st.metadata, st.tensors);
    const maxq = 2 ** info.bits - 1;
    const codes = st.tensors.get(`${name}.codes`)!.bytes.slice();
    const zeros = st.tensors.get(`${name}.zeros`)!.bytes.slice();
    for (const [suffix, arr] of [['codes', codes], ['zeros', zeros]] as const) {
      const bad = arr.findIndex((v) => v > maxq);
      if (bad >= 0) throw new DikeError(file, `tensor "${name}.${suffix}"`, `entry ${bad} is ${arr[bad]}, above ${maxq} for ${info.bits} bits`);
    }
    const scales = toFloat32(st.tensors.get(`${name}.scales`)!);
    const badScale = scales.findIndex((v) => !Number.isFinite(v));
    if (badScale >= 0) throw new DikeError(file, `tensor "${name}.scales"`, `entry ${badScale} is ${scales[badScale]}`);
    out.set(name, { ...info, codes, scales, zeros });
  }
  return out;
}

/**
 * Check that each integer form belongs to a linear map of the model and reproduces its float
 * weights: ŵ = fround(scale · (code − zero)) must equal the stored value (to 1e-6 of the row's
 * largest |ŵ|). A mismatch means the sidecar is stale, e.g. a later step changed the matrix.
 */
export function checkQuantized(
  quantized: ReadonlyMap<string, QuantState>,
  linears: readonly LinearInfo[],
  params: ReadonlyMap<string, { data: Float32Array; shape: readonly number[] }>,
  file: string,
): void {
  for (const [name, s] of quantized) {
    const info = linears.find((l) => l.weight === name);
    const p = params.get(name);
    if (info === undefined || p === undefined) fail(file, name, 'has an integer form but is not a linear map of this model');
    if (info.outDim !== s.rows || info.inDim !== s.cols) fail(file, name, `integer form is [${s.rows}, ${s.cols}] but the model's map is [${info.outDim}, ${info.inDim}] (out, in)`);
    const groups = Math.ceil(s.cols / s.groupSize);
    let worst = 0;
    let at = -1;
    for (let r = 0; r < s.rows; r++) {
      let rowMax = 0;
      let rowWorst = 0;
      let rowAt = -1;
      for (let c = 0; c < s.cols; c++) {
        const gi = r * groups + Math.floor(c / s.groupSize);
        const w = Math.fround(s.scales[gi]! * (s.codes[r * s.cols + c]! - s.zeros[gi]!));
        const stored = info.layout === 'out-in' ? p.data[r * s.cols + c]! : p.data[c * s.rows + r]!;
        rowMax = Math.max(rowMax, Math.abs(w));
        const d = Math.abs(stored - w);
        if (!(d <= rowWorst)) {
          rowWorst = Number.isNaN(d) ? Infinity : d;
          rowAt = c;
        }
      }
      const rel = rowWorst / Math.max(rowMax, 1e-30);
      if (rowWorst > 0 && rel > 1e-6 && rel > worst) {
        worst = rel;
        at = r * s.cols + rowAt;
      }
    }
    if (at >= 0) {
      fail(file, name, `its integer form does not reproduce the float weights (entry [${Math.floor(at / s.cols)}, ${at % s.cols}] off by ${worst.toExponential(2)} of the row's largest weight): the sidecar is stale, e.g. a later step changed this matrix`);
    }
  }
}
