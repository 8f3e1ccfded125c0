/**
 * Round-to-nearest weight quantization: every weight onto the nearest point of its row-group's
 * uniform grid (quantizer.ts), no calibration. The baseline of GPTQ (Frantar et al. 2023, §2 and
 * Table 1 "RTN"), and what llm-compressor's QuantizationModifier does for weights.
 *
 * Options (recipe keys; the CLI's --bits / --group-size map onto the first two):
 *   bits        2, 3, 4 or 8 (required)
 *   group_size  −1 (default): one grid per output channel; g > 0: one per g input columns
 *   symmetric   true (default, as AutoGPTQ and llm-compressor's W4A16/W8A16 schemes): zero point
 *               fixed at 2^(bits−1); false: min–max range with a per-group integer zero point (the
 *               GPTQ reference's default)
 */
import { DikeError } from '../../errors.js';
import { OptionReader } from '../options.js';
import { grid, quantizeRtn, SUPPORTED_BITS } from '../quantizer.js';
import { fromOutIn, toOutIn, type Method, type MatrixReport } from '../types.js';

/** Option keys as written in recipes (and recorded in compression.json). */
export interface QuantOptions {
  bits: number;
  /** −1: per output channel. */
  group_size: number;
  symmetric: boolean;
}

/** The options RTN and GPTQ share, read the same way. */
export function readQuantOptions(r: OptionReader, where: string): QuantOptions {
  const bits = r.int('bits');
  if (!(SUPPORTED_BITS as readonly number[]).includes(bits)) {
    throw new DikeError('recipe', `${where} "bits"`, `supported widths are ${SUPPORTED_BITS.join(', ')} (codes are stored as uint8), found ${bits}`);
  }
  const groupSize = r.int('group_size', -1);
  if (groupSize === 0 || groupSize < -1) throw new DikeError('recipe', `${where} "group_size"`, `expected −1 (per channel) or a positive group width, found ${groupSize}`);
  return { bits, group_size: groupSize, symmetric: r.bool('symmetric', true) };
}

export function assertFinite(data: Float32Array, weight: string): void {
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i]!)) throw new DikeError(weight, `entry ${i}`, `weight is ${data[i]}; cannot quantize a non-finite value`);
  }
}

export const rtn: Method<QuantOptions> = {
  name: 'rtn',
  description: 'round-to-nearest uniform weight quantization, per channel or per group',
  reference: 'Frantar, Ashkboos, Hoefler & Alistarh 2023, "GPTQ", RTN baseline (§2); uniform min–max grid of the reference quant.py',
  needsCalibration: false,
  parseOptions(raw, where) {
    const r = new OptionReader(raw, 'recipe', where);
    const o = readQuantOptions(r, where);
    r.done();
    return o;
  },
  async apply(ctx, opts) {
    const g = grid(opts.bits, opts.symmetric);
    const reports: MatrixReport[] = [];
    for (const t of ctx.targets) {
      const p = ctx.params.get(t.weight)!;
      assertFinite(p.data, t.weight);
      const m = toOutIn(p, t);
      const state = quantizeRtn(g, m.data, m.rows, m.cols, opts.group_size);
      fromOutIn(m, p, t);
      ctx.quantized.set(t.weight, state);
      reports.push({ weight: t.weight, method: 'rtn', bits: opts.bits, groupSize: state.groupSize, symmetric: opts.symmetric });
    }
    return reports;
  },
};
