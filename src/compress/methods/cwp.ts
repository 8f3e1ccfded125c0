/**
 * Critical Weight Protection (Al Hakim et al. 2026, "Preserving Fairness and Safety in Quantized LLMs
 * Through Critical Weight Protection", arXiv 2601.12033): the weights with the largest fairness
 * saliency s(w) = mean over pairs of (∂ℓ_fair/∂w)² (written by `dike saliency`, locate/saliency.ts)
 * keep their full-precision value; every other weight is quantized.
 *
 * As the authors' code does it (only the abstract of the paper was readable here):
 *   selection   one global threshold over all quantized matrices: the top `protect` fraction of
 *               scores (ties broken by matrix order, then index, so the count is exact)
 *   quantizer   round-to-nearest; each grid's range comes from the UNPROTECTED weights only, the
 *               protected ones are written back unchanged:
 *                 ŵ_ij = w_ij                       (i, j) protected
 *                 ŵ_ij = RTN(w_ij; grid of {w_ik : k in group, (i, k) not protected})   otherwise
 *               (their code applies this to the AWQ-scaled weights with one grid per row; here the
 *               grid is Dikē's per group, as `rtn`, and there is no AWQ scaling.)
 *   storage     protected values stay float32 beside the dense integer codes (SpQR-style sparse
 *               outliers): effective bits per weight = bits + (protected / n) · (32 value + 32 index)
 *               (scales and zero points not counted, as for rtn).
 *
 * Same-size controls (protect_by): magnitude (largest |w|, the plain outlier protection) or random
 * (seeded by the recipe seed), so a grid can ask whether fairness saliency beats them.
 * base=gptq is not implemented (GPTQ's error feedback would move protected weights; the paper's own
 * pipeline is AWQ + RTN).
 *
 * No integer form is recorded (quantization.safetensors): it cannot hold the protected values, so a
 * deployed 4-bit kernel would lose them; the written float weights are exact.
 */
import path from 'node:path';
import { DikeError } from '../../errors.js';
import { readSafetensors, toFloat32 } from '../../model/safetensors.js';
import { Rng } from '../../util/rng.js';
import { OptionReader } from '../options.js';
import { effectiveGroupSize, findParams, grid, groupCount, quantizeCode, dequantize, type Grid } from '../quantizer.js';
import { fromOutIn, toOutIn, type Method, type MatrixReport } from '../types.js';
import { assertFinite, readQuantOptions, type QuantOptions } from './rtn.js';

export const PROTECT_BY = ['saliency', 'magnitude', 'random'] as const;
export type ProtectBy = (typeof PROTECT_BY)[number];

export interface CwpOptions extends QuantOptions {
  /** Fraction of the targets' weights kept at full precision, in [0, 1). */
  protect: number;
  protect_by: ProtectBy;
  /** Saliency file (required for protect_by=saliency). */
  saliency?: string;
  base: 'rtn';
}

/**
 * Indices of the k largest scores over the concatenation of `scores` (matrix order, then index on
 * ties), as one boolean mask per matrix.
 */
export function topK(scores: readonly Float64Array[] | readonly Float32Array[], k: number): Uint8Array[] {
  const masks = scores.map((s) => new Uint8Array(s.length));
  if (k <= 0) return masks;
  const all = new Float64Array(scores.reduce((n, s) => n + s.length, 0));
  let o = 0;
  for (const s of scores) {
    all.set(s, o);
    o += s.length;
  }
  if (k >= all.length) {
    for (const m of masks) m.fill(1);
    return masks;
  }
  const sorted = all.slice().sort();
  const t = sorted[all.length - k]!; // the k-th largest value
  let above = 0;
  for (let i = all.length - 1; i >= 0 && sorted[i]! > t; i--) above++;
  let ties = k - above;
  scores.forEach((s, m) => {
    for (let i = 0; i < s.length; i++) {
      if (s[i]! > t) masks[m]![i] = 1;
      else if (s[i] === t && ties > 0) {
        masks[m]![i] = 1;
        ties--;
      }
    }
  });
  return masks;
}

/** k distinct positions out of n (partial Fisher–Yates, seeded), as masks over the matrices. */
function randomMasks(lengths: readonly number[], k: number, seed: number): Uint8Array[] {
  const n = lengths.reduce((a, b) => a + b, 0);
  const idx = new Int32Array(n);
  for (let i = 0; i < n; i++) idx[i] = i;
  const rng = new Rng(seed);
  for (let i = 0; i < k; i++) {
    const j = i + rng.int(n - i);
    const tmp = idx[i]!;
    idx[i] = idx[j]!;
    idx[j] = tmp;
  }
  const masks = lengths.map((l) => new Uint8Array(l));
  const starts: number[] = [];
  let o = 0;
  for (const l of lengths) {
    starts.push(o);
    o += l;
  }
  for (let i = 0; i < k; i++) {
    const g = idx[i]!;
    let m = 0;
    while (m + 1 < starts.length && starts[m + 1]! <= g) m++;
    masks[m]![g - starts[m]!] = 1;
  }
  return masks;
}

/**
 * RTN of an [out, in] row-major matrix with the entries where `keep` is 1 left unchanged and left out
 * of their group's range. Overwrites `data`; returns nothing (no integer form can hold the kept values).
 */
export function quantizeRtnProtected(g: Grid, data: Float32Array, keep: Uint8Array, rows: number, cols: number, groupSize: number): void {
  const gs = effectiveGroupSize(groupSize, cols);
  const groups = groupCount(cols, gs);
  const buf = new Float32Array(gs);
  const scale = new Float32Array(1);
  const zero = new Uint8Array(1);
  for (let r = 0; r < rows; r++) {
    for (let k = 0; k < groups; k++) {
      const from = r * cols + k * gs;
      const n = Math.min(gs, cols - k * gs);
      let m = 0;
      for (let i = from; i < from + n; i++) if (keep[i] === 0) buf[m++] = data[i]!;
      if (m === 0) continue;
      findParams(g, buf, 0, m, 1, scale, zero, 0);
      for (let i = from; i < from + n; i++) {
        if (keep[i] === 0) data[i] = dequantize(quantizeCode(data[i]!, scale[0]!, zero[0]!, g.maxq), scale[0]!, zero[0]!);
      }
    }
  }
}

/** The saliency scores of the named weights, checked against their shapes (one-line errors). */
export function readSaliency(file: string, weights: readonly { name: string; shape: readonly number[] }[]): Float32Array[] {
  let st;
  try {
    st = readSafetensors(file);
  } catch (e) {
    if (e instanceof DikeError) throw e;
    throw new DikeError(file, '', `saliency: cannot read this file (${(e as Error).message.split('\n')[0]}); write one with dike saliency`);
  }
  return weights.map(({ name, shape }) => {
    const t = st.tensors.get(name);
    if (t === undefined) throw new DikeError(file, `tensor "${name}"`, 'saliency: missing (the file must score every weight the step quantizes; write it with dike saliency for this model)');
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new DikeError(file, `tensor "${name}"`, `saliency: shape [${t.shape.join(', ')}] but the weight is [${shape.join(', ')}]`);
    }
    const v = toFloat32(t);
    for (let i = 0; i < v.length; i++) {
      if (!Number.isFinite(v[i]!) || v[i]! < 0) throw new DikeError(file, `tensor "${name}" entry ${i}`, `saliency: expected a finite score ≥ 0, found ${v[i]}`);
    }
    return v;
  });
}

export const cwp: Method<CwpOptions> = {
  name: 'cwp',
  description: 'Critical Weight Protection: the top fraction of weights by fairness saliency (squared gradients) kept at full precision, the rest RTN',
  reference: 'Al Hakim et al. 2026, "Preserving Fairness and Safety in Quantized LLMs Through Critical Weight Protection", arXiv 2601.12033 (selection and mixed-precision RTN as in the authors\' code)',
  needsCalibration: false,
  parseOptions(raw, where) {
    const r = new OptionReader(raw, 'recipe', where);
    const q = readQuantOptions(r, where);
    const protect = r.num('protect', 0.01, [0, 1]);
    if (protect >= 1) throw new DikeError('recipe', `${where} "protect"`, 'expected a fraction below 1 (protecting everything is no quantization)');
    const protectBy = r.oneOf('protect_by', PROTECT_BY, 'saliency');
    const base = r.str('base', 'rtn');
    if (base !== 'rtn') throw new DikeError('recipe', `${where} "base"`, `only base=rtn is implemented (the authors quantize with AWQ + RTN), found ${JSON.stringify(base)}`);
    const saliency = raw['saliency'] === undefined ? undefined : r.str('saliency');
    if (protectBy === 'saliency' && saliency === undefined && protect > 0) {
      throw new DikeError('recipe', `${where} "saliency"`, 'required for protect_by=saliency: a file written by dike saliency (or use protect_by=magnitude|random)');
    }
    r.done();
    return { ...q, protect, protect_by: protectBy, ...(saliency !== undefined ? { saliency: path.resolve(saliency) } : {}), base: 'rtn' };
  },
  async apply(ctx, opts) {
    const g = grid(opts.bits, opts.symmetric);
    const params = ctx.targets.map((t) => ctx.params.get(t.weight)!);
    params.forEach((p, i) => assertFinite(p.data, ctx.targets[i]!.weight));
    const lengths = params.map((p) => p.data.length);
    const total = lengths.reduce((a, b) => a + b, 0);
    const k = Math.round(opts.protect * total);
    let masks: Uint8Array[];
    if (k === 0) masks = lengths.map((l) => new Uint8Array(l));
    else if (opts.protect_by === 'random') masks = randomMasks(lengths, k, ctx.seed);
    else if (opts.protect_by === 'magnitude') masks = topK(params.map((p) => Float32Array.from(p.data, Math.abs)), k);
    else masks = topK(readSaliency(opts.saliency!, ctx.targets.map((t, i) => ({ name: t.weight, shape: params[i]!.shape }))), k);
    const reports: MatrixReport[] = [];
    ctx.targets.forEach((t, i) => {
      const p = params[i]!;
      const m = toOutIn(p, t);
      // The mask is in storage layout; toOutIn's reorder applied to it gives the [out, in] mask.
      const keep = toOutIn({ ...p, data: Float32Array.from(masks[i]!) }, t).data;
      const keepU8 = Uint8Array.from(keep);
      quantizeRtnProtected(g, m.data, keepU8, m.rows, m.cols, opts.group_size);
      fromOutIn(m, p, t);
      ctx.quantized.delete(t.weight);
      let protectedCount = 0;
      for (const x of masks[i]!) protectedCount += x;
      reports.push({
        weight: t.weight,
        method: 'cwp',
        bits: opts.bits,
        groupSize: effectiveGroupSize(opts.group_size, m.cols),
        symmetric: opts.symmetric,
        detail: {
          protect_by: opts.protect_by,
          protected: protectedCount,
          protected_fraction: protectedCount / m.data.length,
          effective_bits: opts.bits + (protectedCount / m.data.length) * 64,
        },
      });
    });
    return reports;
  },
};
