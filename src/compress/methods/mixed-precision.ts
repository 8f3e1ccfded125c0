/**
 * Bias-aware mixed precision: round-to-nearest quantization (rtn.ts; Frantar et al. 2023 §2) with
 * two widths, the units where low-bit compression moves bias most kept at `high_bits`, the rest at
 * `low_bits`, at a stated average width.
 *
 * Sensitivity of a unit (a layer × module or a matrix): from a `dike locate` run of the low-bit
 * variant (its locate.json), |predicted| — the first-order prediction of the mean item-score change
 * when only that unit is compressed, g·(W_variant − W)/n — or, with `sensitivity: measured`,
 * |score_delta| as measured by leave-one-in. Targets no unit covers have sensitivity 0.
 *
 * Allocation (bits per weight, scales not counted; P_u = the unit's weight count, P = Σ P_u):
 *   avg = (Σ_high P_u·high + Σ_low P_u·low) / P  ≤  avg_bits
 *   ⇔ Σ_high P_u ≤ (avg_bits − low)·P / (high − low)   (the high-bit budget)
 * Units are visited by decreasing sensitivity (ties by label) and each one that still fits the
 * budget goes to high bits (a greedy knapsack; a large unit that does not fit is skipped for smaller
 * ones after it). `order: random` visits them in a seeded random order instead: the baseline at the
 * same average width that the bias-aware order must beat.
 */
import { readFileSync } from 'node:fs';
import { DikeError } from '../../errors.js';
import { Rng } from '../../util/rng.js';
import { OptionReader } from '../options.js';
import { grid, quantizeRtn, SUPPORTED_BITS } from '../quantizer.js';
import { fromOutIn, toOutIn, type Method, type MatrixReport } from '../types.js';
import { assertFinite } from './rtn.js';

export interface MixedPrecisionOptions {
  /** A locate.json (required with order: bias). */
  locate?: string;
  /** Which benchmark of the locate.json (required when it holds several). */
  benchmark?: string;
  sensitivity: 'predicted' | 'measured';
  high_bits: number;
  low_bits: number;
  avg_bits: number;
  group_size: number;
  symmetric: boolean;
  order: 'bias' | 'random';
}

export interface SensitivityUnit {
  label: string;
  weights: string[];
  /** Weights in the unit (Σ rows·cols of its matrices). */
  params: number;
  sensitivity: number;
}

export interface Allocation {
  /** Labels of the units at high bits, in the order they were taken. */
  high: string[];
  /** The achieved average bits per weight. */
  avgBits: number;
}

/** Greedy allocation of high bits to `units` in the given order (see the header). */
export function allocateBits(units: readonly SensitivityUnit[], high: number, low: number, avgBits: number): Allocation {
  const total = units.reduce((s, u) => s + u.params, 0);
  const budget = ((avgBits - low) * total) / (high - low);
  let used = 0;
  const taken: string[] = [];
  for (const u of units) {
    if (used + u.params <= budget + 1e-9 * total) {
      used += u.params;
      taken.push(u.label);
    }
  }
  return { high: taken, avgBits: total === 0 ? low : (used * high + (total - used) * low) / total };
}

/** Units by decreasing sensitivity, ties by label. */
export function bySensitivity(units: readonly SensitivityUnit[]): SensitivityUnit[] {
  return [...units].sort((a, b) => b.sensitivity - a.sensitivity || (a.label < b.label ? -1 : a.label > b.label ? 1 : 0));
}

/** The units of a locate.json for one benchmark, with |predicted| or |score_delta| as sensitivity. */
export function readLocateSensitivity(file: string, benchmark: string | undefined, kind: 'predicted' | 'measured'): { label: string; weights: string[]; sensitivity: number }[] {
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new DikeError(file, '', code === 'ENOENT' ? 'locate results (mixed-precision "locate"): file not found' : `locate results: ${(e as Error).message.split('\n')[0]}`);
  }
  const benches = (doc as { benchmarks?: unknown }).benchmarks;
  if (!Array.isArray(benches) || benches.length === 0) throw new DikeError(file, '"benchmarks"', 'expected the benchmarks of a dike locate run (locate.json)');
  const names = benches.map((b) => (b as { benchmark?: unknown }).benchmark);
  let b: unknown;
  if (benchmark !== undefined) {
    b = benches[names.indexOf(benchmark)];
    if (b === undefined) throw new DikeError(file, '"benchmarks"', `no benchmark "${benchmark}" (found ${names.join(', ')})`);
  } else if (benches.length === 1) b = benches[0];
  else throw new DikeError(file, '"benchmarks"', `holds ${names.join(', ')}: name one with the option benchmark=…`);
  const key = kind === 'predicted' ? 'predicted' : 'score_delta';
  const units = (b as { units?: unknown }).units;
  if (!Array.isArray(units)) throw new DikeError(file, `benchmark ${String((b as { benchmark?: unknown }).benchmark)} "units"`, 'expected a list of units');
  return units.map((u, i) => {
    const r = u as Record<string, unknown>;
    const where = `benchmark ${String((b as { benchmark?: unknown }).benchmark)} unit ${i + 1}`;
    if (typeof r['unit'] !== 'string' || !Array.isArray(r['weights']) || r['weights'].some((w) => typeof w !== 'string')) throw new DikeError(file, where, 'expected "unit" (a label) and "weights" (weight names)');
    const v = r[key];
    if (typeof v !== 'number' || !Number.isFinite(v)) {
      throw new DikeError(file, `${where} "${key}"`, kind === 'predicted' ? 'no first-order prediction for this unit (run locate with a differentiable benchmark, or use sensitivity=measured)' : 'no measured score change for this unit (run locate without --predict-only)');
    }
    return { label: r['unit'], weights: r['weights'] as string[], sensitivity: Math.abs(v) };
  });
}

export const mixedPrecision: Method<MixedPrecisionOptions> = {
  name: 'mixed-precision',
  description: 'round-to-nearest at two widths: the units `dike locate` finds most bias-sensitive at high_bits, the rest at low_bits, at a stated average width (order=random: the same-size baseline)',
  reference: 'RTN (Frantar et al. 2023, GPTQ §2 baseline) with bits allocated by the first-order bias sensitivity of dike locate: greedy, Σ_high P_u ≤ (avg_bits − low)·P/(high − low)',
  needsCalibration: false,
  parseOptions(raw, where) {
    const r = new OptionReader(raw, 'recipe', where);
    const bits = (k: string, d: number): number => {
      const b = r.int(k, d);
      if (!(SUPPORTED_BITS as readonly number[]).includes(b)) throw new DikeError('recipe', `${where} "${k}"`, `supported widths are ${SUPPORTED_BITS.join(', ')}, found ${b}`);
      return b;
    };
    const high = bits('high_bits', 8);
    const low = bits('low_bits', 4);
    if (!(high > low)) throw new DikeError('recipe', `${where} "high_bits"`, `must exceed low_bits (${low}), found ${high}`);
    const order = r.oneOf('order', ['bias', 'random'] as const, 'bias');
    const o: MixedPrecisionOptions = {
      ...(raw['locate'] !== undefined ? { locate: r.str('locate') } : {}),
      ...(raw['benchmark'] !== undefined ? { benchmark: r.str('benchmark') } : {}),
      sensitivity: r.oneOf('sensitivity', ['predicted', 'measured'] as const, 'predicted'),
      high_bits: high,
      low_bits: low,
      avg_bits: r.num('avg_bits', undefined, [low, high]),
      group_size: r.int('group_size', -1),
      symmetric: r.bool('symmetric', true),
      order,
    };
    r.done();
    if (o.group_size === 0 || o.group_size < -1) throw new DikeError('recipe', `${where} "group_size"`, `expected −1 (per channel) or a positive group width, found ${o.group_size}`);
    if (order === 'bias' && o.locate === undefined) throw new DikeError('recipe', `${where} "locate"`, 'order=bias needs the locate.json of a dike locate run of the low-bit variant');
    return o;
  },
  async apply(ctx, opts) {
    const size = new Map(ctx.targets.map((t) => [t.weight, t.inDim * t.outDim]));
    const owner = new Map<string, string>();
    const units: SensitivityUnit[] = [];
    if (opts.locate !== undefined) {
      for (const u of readLocateSensitivity(opts.locate, opts.benchmark, opts.sensitivity)) {
        const weights = u.weights.filter((w) => size.has(w));
        if (weights.length === 0) continue;
        for (const w of weights) {
          if (owner.has(w)) throw new DikeError(opts.locate, `unit ${u.label}`, `${w} is also in unit ${owner.get(w)}`);
          owner.set(w, u.label);
        }
        units.push({ label: u.label, weights, params: weights.reduce((s, w) => s + size.get(w)!, 0), sensitivity: u.sensitivity });
      }
    }
    for (const t of ctx.targets) if (!owner.has(t.weight)) units.push({ label: t.weight, weights: [t.weight], params: size.get(t.weight)!, sensitivity: 0 });
    const ordered = opts.order === 'bias' ? bySensitivity(units) : new Rng(ctx.seed).shuffle(bySensitivity(units));
    const alloc = allocateBits(ordered, opts.high_bits, opts.low_bits, opts.avg_bits);
    const highUnits = new Set(alloc.high);
    const unitOf = new Map(units.flatMap((u) => u.weights.map((w) => [w, u] as const)));
    const reports: MatrixReport[] = [];
    for (const t of ctx.targets) {
      const u = unitOf.get(t.weight)!;
      const bits = highUnits.has(u.label) ? opts.high_bits : opts.low_bits;
      const p = ctx.params.get(t.weight)!;
      assertFinite(p.data, t.weight);
      const m = toOutIn(p, t);
      const state = quantizeRtn(grid(bits, opts.symmetric), m.data, m.rows, m.cols, opts.group_size);
      fromOutIn(m, p, t);
      ctx.quantized.set(t.weight, state);
      reports.push({
        weight: t.weight,
        method: 'mixed-precision',
        bits,
        groupSize: state.groupSize,
        symmetric: opts.symmetric,
        detail: { unit: u.label, sensitivity: u.sensitivity, order: opts.order, avg_bits_target: opts.avg_bits, avg_bits: alloc.avgBits },
      });
    }
    return reports;
  },
};
