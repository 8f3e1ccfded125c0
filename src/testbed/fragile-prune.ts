/**
 * A correction pruning cannot see: the debias step's change confined to the weights that pruning
 * removes, so the pruned testbed is the pruned skewed model exactly.
 *
 * Unstructured pruning with no weight update (magnitude, Han et al. 2015; Wanda, Sun et al. 2024 eq. 1)
 * outputs P = M ⊙ W for a mask M it derives from W. If every weight W keeps (M = 1) stays at the skewed
 * model's value B and every weight it removes stays removed, P(W) = P(B). The removed set stays removed
 * when each removed entry's score stays strictly below the smallest score that is kept in its comparison
 * group (the count per group is fixed):
 *   - magnitude, per matrix: |w| < t = min_{kept} |B|;
 *   - Wanda, per output row r: |w_rj| · ‖X_j‖ < t_r = min_{kept in r} |B_rk| · ‖X_k‖, with ‖X_j‖ the
 *     input norms Wanda computes (the audit's default calibration; sequential, block by block, the
 *     earlier blocks pruned: recomputed here with the same walk, the earlier blocks set to Wanda(B)).
 * So the set is a box: kept entries fixed at B, removed entries in [−b, b] with b the smallest of those
 * bounds over the listed pruners, shrunk by a margin. Several pruners at once keep every entry any of
 * them keeps fixed. Parameters pruning does not touch (embeddings, norms, biases) are fixed at B.
 *
 * Magnitude's box is exact (its scores are the weights). Wanda's walk scores every map of a block on
 * the block's input passed through the block's own *dense* maps before it (the MLP's input passes the
 * block's attention), so a correction in an earlier map of a block would move the norms of the later
 * ones (measured on dike-gpt2-mini: moving every free entry of the whole box to ±its bound changed 34k
 * of Wanda's mask entries). With Wanda among the pruners, only the maps of each block's last sequential
 * group (the MLP's down projection: nothing of the block reads its output) are left free; then every
 * norm Wanda computes is B's, and the box is exact for both pruners. The build checks both results entry
 * by entry anyway (testbed.json `fragile.pruneMaskDiffering`).
 */
import { DikeError } from '../errors.js';
import type { Checkpoint, Param } from '../model/checkpoint.js';
import type { LinearInfo } from '../model/arch/types.js';
import { applyRecipe, parseRecipe } from '../compress/recipe.js';
import { walkCalibration } from '../compress/calibrate.js';

export const PRUNERS = ['magnitude', 'wanda'] as const;
export type Pruner = (typeof PRUNERS)[number];

/** The pruning a `fragile.method: prune` testbed is fragile for (the audit's `magnitude:sparsity=s` / `wanda:sparsity=s`). */
export interface PruneFragileSpec {
  sparsity: number;
  pruners: readonly Pruner[];
  /** Wanda's calibration (the audit's: its data's train text, 32 × 64, seed 20260101). */
  calibration: { file: string; samples: number; seq: number; seed: number };
}

/** Removed entries stay below this fraction of magnitude's threshold (float rounding only). */
const MAGNITUDE_MARGIN = 1e-3;
/** Removed entries' Wanda scores stay below this fraction of the row's threshold (float rounding only). */
const WANDA_MARGIN = 1e-3;

export function pruneRecipe(spec: PruneFragileSpec, pruner: Pruner) {
  const c = spec.calibration;
  return parseRecipe(
    JSON.stringify({ seed: c.seed, ...(pruner === 'wanda' ? { calibration: { file: c.file, samples: c.samples, seq_len: c.seq } } : {}), steps: [{ method: pruner, sparsity: spec.sparsity }] }),
    `testbed-fragile-${pruner}.json`,
  );
}

/** Stored index of entry (row o = output, column i = input) of a matrix in its layout. */
function indexer(info: LinearInfo): (o: number, i: number) => number {
  return info.layout === 'out-in' ? (o, i) => o * info.inDim + i : (o, i) => i * info.outDim + o;
}

export interface PruneFragileBox {
  box: Map<string, { lo: Float32Array; hi: Float32Array }>;
  /** Matrices some pruner prunes. */
  pruned: Set<string>;
  /** Entries free to move (removed by every pruner), of all entries of pruned matrices. */
  free: number;
  entries: number;
  /** P(B) per pruner: what the check compares the debiased model's pruning with. */
  results: Map<Pruner, Map<string, Param>>;
}

/** Wanda's input norms ‖X_j‖ per matrix, as its sequential walk on B computes them (module comment). */
async function wandaNorms(skewed: Checkpoint, pruned: Map<string, Param>, targets: readonly LinearInfo[], spec: PruneFragileSpec): Promise<Map<string, Float64Array>> {
  const q = await applyRecipe(skewed, pruneRecipe(spec, 'wanda'), { threads: 1 });
  const params = new Map([...skewed.params].map(([n, p]) => [n, { ...p, data: Float32Array.from(p.data) }]));
  const norms = new Map<string, Float64Array>();
  await walkCalibration(skewed, params, targets, q.calibration!, { mode: 'sequential', granularity: 'block', threads: 1 }, async (group, stats) => {
    for (const t of group) {
      const s = stats.get(t.weight);
      if (s === undefined) throw new DikeError(t.weight, 'testbed fragile prune', 'no calibration statistics for this matrix');
      const n = new Float64Array(t.inDim);
      for (let j = 0; j < t.inDim; j++) n[j] = Math.sqrt(Math.max(0, s.gram[j * t.inDim + j]!));
      norms.set(t.weight, n);
      params.get(t.weight)!.data.set(pruned.get(t.weight)!.data); // the walk goes on from Wanda(B), as Wanda's own does
    }
  });
  return norms;
}

/** The box of weights whose pruning (every listed pruner) equals the skewed model's (module comment). */
export async function pruneFragileBox(skewed: Checkpoint, spec: PruneFragileSpec, margins: { magnitude?: number; wanda?: number } = {}): Promise<PruneFragileBox> {
  const magMargin = margins.magnitude ?? MAGNITUDE_MARGIN; // tests plant a wrong one
  const wandaMargin = margins.wanda ?? WANDA_MARGIN;
  const box = new Map<string, { lo: Float32Array; hi: Float32Array }>();
  for (const [name, p] of skewed.params) box.set(name, { lo: Float32Array.from(p.data), hi: Float32Array.from(p.data) });
  const results = new Map<Pruner, Map<string, Param>>();
  for (const pr of spec.pruners) results.set(pr, (await applyRecipe(skewed, pruneRecipe(spec, pr), { threads: 1 })).params);
  const all = skewed.family.linears(skewed.config, skewed.task);
  const targets = all.filter((t) => [...results.values()].some((r) => r.get(t.weight)!.data.some((v, i) => v !== skewed.params.get(t.weight)!.data[i])));
  const norms = results.has('wanda') ? await wandaNorms(skewed, results.get('wanda')!, targets, spec) : undefined;
  // With Wanda, free entries only in each block's last sequential group (module comment).
  const lastGroup = new Map<number, number>();
  for (const t of targets) lastGroup.set(t.layer, Math.max(lastGroup.get(t.layer) ?? -Infinity, t.seqGroup));
  let free = 0;
  let entries = 0;
  for (const t of targets) {
    const b = skewed.params.get(t.weight)!.data;
    const at = indexer(t);
    entries += b.length;
    // bound[k]: the largest |w| that keeps entry k removed by every pruner (−1: kept by one, fixed).
    const bound = new Float64Array(b.length).fill(norms !== undefined && t.seqGroup !== lastGroup.get(t.layer) ? -1 : Infinity);
    for (const [pr, res] of results) {
      const p = res.get(t.weight)!.data;
      if (pr === 'magnitude') {
        let tKeep = Infinity;
        for (let k = 0; k < b.length; k++) if (p[k] !== 0) tKeep = Math.min(tKeep, Math.abs(b[k]!));
        for (let k = 0; k < b.length; k++) bound[k] = p[k] !== 0 ? -1 : Math.min(bound[k]!, tKeep * (1 - magMargin));
      } else {
        const n = norms!.get(t.weight)!;
        for (let o = 0; o < t.outDim; o++) {
          let tRow = Infinity;
          for (let i = 0; i < t.inDim; i++) if (p[at(o, i)] !== 0) tRow = Math.min(tRow, Math.abs(b[at(o, i)]!) * n[i]!);
          for (let i = 0; i < t.inDim; i++) {
            const k = at(o, i);
            if (p[k] !== 0) bound[k] = -1;
            else if (n[i]! > 0) bound[k] = Math.min(bound[k]!, (tRow * (1 - wandaMargin)) / n[i]!);
          }
        }
      }
    }
    let maxAbs = 0;
    for (let k = 0; k < b.length; k++) maxAbs = Math.max(maxAbs, Math.abs(b[k]!));
    const { lo, hi } = box.get(t.weight)!;
    for (let k = 0; k < b.length; k++) {
      if (bound[k]! < 0) continue; // kept by some pruner: lo = hi = B
      // Below the bound in float32 too (fround may round up): step down one ulp where it did.
      let h = Math.fround(Math.min(bound[k]!, maxAbs));
      if (h >= Math.min(bound[k]!, maxAbs) && h > 0) h = Math.fround(h * (1 - 2 ** -23));
      lo[k] = -h;
      hi[k] = h;
      free++;
    }
  }
  return { box, pruned: new Set(targets.map((t) => t.weight)), free, entries, results };
}

/** Entries whose pruning (any listed pruner) differs between the model and B: the build's check. */
export async function pruneMasksDiffering(model: Checkpoint, fb: PruneFragileBox, spec: PruneFragileSpec): Promise<number> {
  let differ = 0;
  for (const [pr, resB] of fb.results) {
    const res = (await applyRecipe(model, pruneRecipe(spec, pr), { threads: 1 })).params;
    for (const name of fb.pruned) {
      const a = resB.get(name)!.data;
      const c = res.get(name)!.data;
      for (let k = 0; k < a.length; k++) if (a[k] !== c[k]) differ++;
    }
  }
  return differ;
}
