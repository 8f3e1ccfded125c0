/**
 * Dynamic int8 quantization, as ONNX Runtime's `quantize_dynamic` (per_channel=True, weight type
 * QInt8) and PyTorch's dynamic quantization deploy a linear layer: int8 weights fixed ahead of time,
 * activations quantized at run time.
 *
 *   weights, per output channel r (symmetric, restricted range as ORT's symmetric int8):
 *     scale_r = max(|w_r|) / 127   (float32; 1 for an all-zero row)
 *     q = clamp(round(w / scale_r), −127, 127), rounding half to even;  ŵ = scale_r · q
 *   activations (`activations: dynamic`, the default), per tensor at run time (DynamicQuantizeLinear):
 *     s = (max(0, max x) − min(0, min x)) / 255,  z = round(−min(0, min x) / s),
 *     x̂ = s · (clamp(round(x / s) + z, 0, 255) − z)
 *
 * The integer form is stored in our uint8 convention: code = q + 128, zero point 128, one group per
 * row (bits 8, group size = in). What runs:
 *   simulated  the float Gemm over ŵ (written to model.safetensors), its input fake-quantized as x̂
 *              (DynamicQuantizeLinear → DequantizeLinear inserted by the runtime) — the same numbers
 *              the deployed kernel multiplies, so the two modes agree up to float rounding;
 *   deployed   DynamicQuantizeMatMul: x quantized to uint8, int8 × uint8 GEMM accumulated in int32,
 *              rescaled by s · scale_r.
 * With `activations: float` the method is weight-only int8: simulated = float Gemm over ŵ, deployed =
 * MatMulNBits with 8-bit codes.
 *
 * Per-tensor activation scales depend on every row of the batch (padding included), so scores of a
 * dynamic-int8 model depend on how items are batched, as they do under ONNX Runtime.
 */
import { DikeError } from '../../errors.js';
import { OptionReader } from '../options.js';
import { fromOutIn, toOutIn, type Method, type MatrixReport, type QuantState } from '../types.js';

export interface DynamicInt8Options {
  activations: 'dynamic' | 'float';
}

/** Round half to even (numpy.round, as ORT's quantizer rounds). */
function rint(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * Quantize an [out, in] row-major matrix per output channel to symmetric int8 in [−127, 127];
 * `data` is overwritten with ŵ. Returns the integer form (codes = q + 128, zero 128).
 */
export function quantizeDynamicInt8(data: Float32Array, rows: number, cols: number, dynamicActivations: boolean): QuantState {
  const codes = new Uint8Array(rows * cols);
  const scales = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let absmax = 0;
    for (let c = 0; c < cols; c++) absmax = Math.max(absmax, Math.abs(data[r * cols + c]!));
    const scale = absmax === 0 ? 1 : Math.fround(absmax / 127);
    scales[r] = scale;
    for (let c = 0; c < cols; c++) {
      const i = r * cols + c;
      const q = Math.min(127, Math.max(-127, rint(Math.fround(data[i]! / scale))));
      codes[i] = q + 128;
      data[i] = Math.fround(scale * q);
    }
  }
  const s: QuantState = { bits: 8, groupSize: cols, symmetric: true, rows, cols, codes, scales, zeros: new Uint8Array(rows).fill(128) };
  if (dynamicActivations) s.dynamicActivations = true;
  return s;
}

export const dynamicInt8: Method<DynamicInt8Options> = {
  name: 'dynamic-int8',
  description: 'per-channel symmetric int8 weights with per-tensor uint8 activations quantized at run time (ONNX Runtime quantize_dynamic)',
  reference: 'ONNX Runtime quantize_dynamic (per_channel, QInt8 weights, DynamicQuantizeLinear activations); Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference", eq. 1–4',
  needsCalibration: false,
  parseOptions(raw, where) {
    const r = new OptionReader(raw, 'recipe', where);
    const o = { activations: r.oneOf('activations', ['dynamic', 'float'] as const, 'dynamic') };
    r.done();
    return o;
  },
  async apply(ctx, opts) {
    const reports: MatrixReport[] = [];
    for (const t of ctx.targets) {
      const p = ctx.params.get(t.weight)!;
      const bad = p.data.findIndex((v) => !Number.isFinite(v));
      if (bad >= 0) throw new DikeError(t.weight, `entry ${bad}`, `weight is ${p.data[bad]}; cannot quantize a non-finite value`);
      const m = toOutIn(p, t);
      const before = m.data.slice();
      const state = quantizeDynamicInt8(m.data, m.rows, m.cols, opts.activations === 'dynamic');
      fromOutIn(m, p, t);
      ctx.quantized.set(t.weight, state);
      let err = 0;
      let norm = 0;
      for (let i = 0; i < before.length; i++) {
        err += (before[i]! - m.data[i]!) ** 2;
        norm += before[i]! ** 2;
      }
      reports.push({
        weight: t.weight,
        method: 'dynamic-int8',
        bits: 8,
        groupSize: m.cols,
        symmetric: true,
        detail: { activations: opts.activations === 'dynamic' ? 'uint8 per tensor at run time' : 'float', weight_relative_error: norm === 0 ? 0 : Math.sqrt(err / norm) },
      });
    }
    return reports;
  },
};
