/**
 * Planted bias: the proof that locate finds origins. A known association is hidden in one matrix so
 * that magnitude pruning of that matrix removes it exactly:
 *
 *   P  = the entries per-matrix magnitude pruning at `sparsity` zeroes (the smallest |w|),
 *   t  = the largest |w| in P,
 *   G  = ∇_W Σ_{items in subset} score_i   (the benchmark's own item score, Dikē's autodiff),
 *   the `fraction` of P with the largest |G| is set to 0.999·t·sign(G).
 *
 * The planted entries stay below every kept entry, so pruning the matrix zeroes the same set P and
 * the planted model pruned equals the dense model pruned in that matrix (plantBias checks this);
 * the association lives only in what that unit's compression deletes.
 */
import path from 'node:path';
import { DikeError } from '../errors.js';
import { loadCheckpoint, type Checkpoint, type Param } from '../model/checkpoint.js';
import { writeModelDir } from '../train/loop.js';
import { findBenchmark } from '../measure/registry.js';
import { Rng } from '../util/rng.js';
import { parseVariant } from '../audit/audit.js';
import { runLocate } from './locate.js';
import { byMagnitude } from './stats.js';
import { ModelRunner } from '../runtime/session.js';
import type { ItemObjective } from '../measure/types.js';
import { zeroSmallest } from '../compress/methods/magnitude.js';
import { objectiveGradient } from './gradient.js';

export interface Planting {
  weight: string;
  /** Entries changed, and the first-order gain Σ G·ΔW in the subset's summed score. */
  changed: number;
  firstOrderGain: number;
  threshold: number;
}

/** A copy of `ckpt` with the planted matrices (dtype F32: the planted values are not F16-representable). */
export async function plantBias(
  ckpt: Checkpoint,
  subset: readonly ItemObjective[],
  weights: readonly string[],
  opts: { sparsity: number; fraction: number; threads?: number },
): Promise<{ ckpt: Checkpoint; planting: Planting[] }> {
  for (const weight of weights) if (!ckpt.params.has(weight)) throw new DikeError(ckpt.dir, weight, 'no such weight to plant in');
  const { grads } = await objectiveGradient(ckpt, subset, weights, { ...(opts.threads !== undefined ? { threads: opts.threads } : {}), padId: ckpt.tokenizer.special.pad ?? 0 });
  const params = new Map<string, Param>(ckpt.params);
  const plantings: Planting[] = [];
  for (const weight of weights) {
    const p = ckpt.params.get(weight)!;
    const g = grads.get(weight)!;
    const w = p.data;
    const k = Math.round(opts.sparsity * w.length);
    const pruned = w.slice();
    zeroSmallest([pruned], k);
    const inP: number[] = [];
    let t = 0;
    for (let i = 0; i < w.length; i++) {
      if (pruned[i] === 0) {
        inP.push(i);
        t = Math.max(t, Math.abs(w[i]!));
      }
    }
    const chosen = inP.filter((i) => g[i] !== 0).sort((a, b) => Math.abs(g[b]!) - Math.abs(g[a]!) || a - b).slice(0, Math.round(opts.fraction * inP.length));
    const planted = w.slice();
    const v = Math.fround(0.999 * t);
    let gain = 0;
    for (const i of chosen) {
      planted[i] = g[i]! > 0 ? v : -v;
      gain += g[i]! * (planted[i]! - w[i]!);
    }
    // The plant must vanish under the unit's compression: pruning it gives what pruning the original gives.
    const check = planted.slice();
    zeroSmallest([check], k);
    for (let i = 0; i < w.length; i++) {
      if (check[i] !== pruned[i]) throw new Error(`planting in ${weight}: entry ${i} survives pruning (${check[i]} vs ${pruned[i]})`);
    }
    params.set(weight, { ...p, data: planted, dtype: 'F32' });
    plantings.push({ weight, changed: chosen.length, firstOrderGain: gain, threshold: t });
  }
  return { ckpt: { ...ckpt, params }, planting: plantings };
}

// ---- the experiment: plant, locate, check the rank of the planted unit -------------------------

export interface PlantedTrial {
  seed: number;
  model: string;
  unit: string;
  weights: string[];
  changed: number;
  /** Rank (1 = first; ties count against) of the planted unit by |measured Δ| and by |predicted Δ| among the units. */
  rankMeasured: number;
  rankPredicted: number;
  plantedDelta: number;
  nextDelta: number;
  plantedPredicted: number;
  nextPredicted: number;
  spearman: number | null;
  seconds: number;
}

/** 1 + the number of other units whose |value| is at least the unit's (a tie never counts as first). */
export function pessimisticRank(values: readonly number[], idx: number): number {
  const mine = Math.abs(values[idx]!);
  if (!Number.isFinite(mine)) return values.length;
  return 1 + values.filter((v, i) => i !== idx && Number.isFinite(v) && Math.abs(v) >= mine).length;
}

/** One seeded planting: the seed picks the unit and the items (near turning stereotypical) to push; plant; locate. */
export async function plantedTrial(args: {
  model: string;
  seed: number;
  dataDir: string;
  work: string;
  limit: number;
  sparsity: number;
  fraction: number;
  threads?: number;
  /** Units to plant in, as (layer, module); default: chosen by the seed. */
  unit?: { layer: number; module: 'attention' | 'ffn' };
}): Promise<PlantedTrial> {
  const t0 = performance.now();
  const dense = loadCheckpoint(args.model);
  const rng = new Rng(args.seed);
  const linears = dense.family.linears(dense.config, dense.task).filter((l) => l.layer >= 0 && (l.module === 'attention' || l.module === 'ffn'));
  // Seeds walk the layer × module units in order (seed 1: layer 0 attention, seed 2: layer 0 FFN, …).
  const k = (args.seed - 1) % (2 * dense.shape.numLayers);
  const layer = args.unit?.layer ?? Math.floor(k / 2);
  const module = args.unit?.module ?? (k % 2 === 0 ? 'attention' : 'ffn');
  const targets = linears.filter((l) => l.layer === layer && l.module === module).map((l) => l.weight);
  const crows = findBenchmark('crows-pairs')!;
  const scorer = crows.defaultScorer(dense.task)!;
  // The association: push a random half of the items the dense model does not call stereotypical.
  const runner = await ModelRunner.create(dense, args.threads !== undefined ? { threads: args.threads } : {});
  const [items, denseRun] = await (async () => {
    const ctx = { ckpt: dense, runner, dataDir: args.dataDir };
    return [await crows.objective!(ctx, { scorer, limit: args.limit }), await crows.run(ctx, { scorer, seed: 0, resamples: 1000, limit: args.limit })] as const;
  })().finally(() => runner.dispose());
  // Items near flipping: a seeded half of the two thirds of non-stereotypical items with the smallest |score|.
  const unbiased = denseRun.items.filter((i) => i.outcome === 0).sort((a, b) => Math.abs(a.score) - Math.abs(b.score) || a.id.localeCompare(b.id));
  const chosen = new Set(unbiased.slice(0, Math.ceil((2 * unbiased.length) / 3)).filter(() => rng.next() < 0.5).map((i) => i.id));
  const subset = items.filter((i) => chosen.has(i.id));
  const { ckpt: planted, planting } = await plantBias(dense, subset, targets, { sparsity: args.sparsity, fraction: args.fraction, ...(args.threads !== undefined ? { threads: args.threads } : {}) });
  const dir = path.join(args.work, `planted-${path.basename(args.model)}-${args.seed}`);
  writeModelDir(dir, planted, new Map([...planted.params].map(([k, p]) => [k, p.data])), dense.dir, 'F32');
  const r = await runLocate({
    model: dir,
    variant: parseVariant(`magnitude:sparsity=${args.sparsity}`, undefined, 0),
    benchmarks: ['crows-pairs'],
    dataDir: args.dataDir,
    out: path.join(args.work, `locate-${path.basename(args.model)}-${args.seed}`),
    unit: 'layer-module',
    seed: 0,
    resamples: 1000,
    alpha: 0.05,
    limit: args.limit,
    qualityLines: 0,
    leaveOneOut: false,
    ...(args.threads !== undefined ? { threads: args.threads } : {}),
  });
  const b = r.benchmarks[0]!;
  const label = `L${layer}.${module}`;
  const idx = b.units.findIndex((u) => u.unit === label);
  const measured = byMagnitude(b.units.map((u) => u.delta ?? NaN));
  const predicted = byMagnitude(b.units.map((u) => u.predicted ?? NaN));
  const other = (order: number[]): number => order.find((i) => i !== idx)!;
  return {
    seed: args.seed,
    model: path.basename(args.model),
    unit: label,
    weights: targets,
    changed: planting.reduce((s, p) => s + p.changed, 0),
    rankMeasured: pessimisticRank(b.units.map((u) => u.delta ?? NaN), idx),
    rankPredicted: pessimisticRank(b.units.map((u) => u.predicted ?? NaN), idx),
    plantedDelta: b.units[idx]!.delta!,
    nextDelta: b.units[other(measured)]!.delta!,
    plantedPredicted: b.units[idx]!.predicted!,
    nextPredicted: b.units[other(predicted)]!.predicted!,
    spearman: b.spearman_predicted_score_delta,
    seconds: (performance.now() - t0) / 1000,
  };
}
