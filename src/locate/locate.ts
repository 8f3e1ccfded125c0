/**
 * `dike locate`: where in the model a compression variant moves bias.
 *
 *   units (layer × module, or matrix) the variant compresses
 *   leave-one-in   compress only the unit, exactly as the variant would (same recipe, seed,
 *                  calibration; scope narrowed to the unit): paired Δ vs dense on every benchmark
 *                  (the audit's paired bootstrap 95% CI and test), Holm across units, Δ quality
 *   leave-one-out  compress everything but the unit: Δ vs the full variant
 *   first order    predicted Δ item score ≈ Σ g ⊙ (W_variant − W) / n over the unit's matrices, with
 *                  g = ∇_W Σ_items score_i (the benchmark's own per-item score, Dikē's autodiff)
 *   CIE overlap    which of the full variant's flipped items the unit's leave-one-in run also flips
 *
 * Every model is compressed in memory; every benchmark run goes through the experiment store
 * (<out>/dike.sqlite) keyed by content — the dense weights and files, the narrowed recipe (with the
 * calibration text's SHA-256), the data, the options — so a killed run resumes where it stopped, and
 * units could be sharded across machines by their keys.
 */

import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { DikeError } from '../errors.js';
import { loadCheckpoint, type Checkpoint, type Param } from '../model/checkpoint.js';
import type { QuantState } from '../model/quant.js';
import { ConfigReader } from '../model/config.js';
import { resolveArchitecture } from '../model/arch/registry.js';
import { ModelRunner } from '../runtime/session.js';
import { applyRecipe, type CompressionResult, type Recipe } from '../compress/recipe.js';
import { planMeasure } from '../measure/run.js';
import type { Benchmark, BenchmarkResult, ItemScore } from '../measure/types.js';
import { sha256File } from '../util/hash.js';
import { compareVariant, hashDataFolder, measureOne, measureQuality, neutralScore, readQualityLines, type AuditRequest, type VariantSpec } from '../audit/audit.js';
import { hashModelDir, openStore, storePath, type ModelHashes, type Store } from '../audit/store.js';
import { holm } from '../audit/paired.js';
import { flips } from '../audit/cie.js';
import type { DataFileRecord } from '../measure/types.js';
import { dikeVersion } from '../version.js';
import { firstOrderChange, firstOrderChangeAt, objectiveGradient } from './gradient.js';
import { byMagnitude, spearman } from './stats.js';
import { leaveOneIn, leaveOneOut, unitsOf, type Unit, type UnitKind } from './units.js';
import { renderLocateReport } from './report.js';

/** What an audit and a locate run share (model, benchmarks, data, statistics, quality proxy, progress). */
export type LocateRequest = Omit<AuditRequest, 'variants'> & {
  /** The variant to locate (a recipe; a ready directory cannot be narrowed to a unit). */
  variant: VariantSpec;
  unit: UnitKind;
  /** Measure leave-one-out too (one more compression and run per unit). Default true. */
  leaveOneOut?: boolean;
  /** First-order prediction (benchmarks with a differentiable score). Default true. */
  predict?: boolean;
  /** Only the prediction: no unit is compressed and measured. */
  predictOnly?: boolean;
  /** Measure only the `top` units by |predicted| (all when undefined). */
  top?: number;
  /** The experiment store file (default <out>/dike.sqlite); `dike audit --locate` shares the audit's. */
  storeFile?: string;
};

export interface CieOverlap {
  /** Items the full variant flips vs dense, the unit's leave-one-in run flips, and both. */
  full: number;
  unit: number;
  shared: number;
  /** shared / |full ∪ unit| (NaN when neither flips anything). */
  jaccard: number;
  byGroup: Record<string, { full: number; unit: number; shared: number }>;
}

export interface LocatedUnit {
  unit: string;
  layer: number;
  module: 'attention' | 'ffn';
  matrix?: string;
  head?: number;
  /** Grouped-query attention: the key/value group whose K and V rows the unit is. */
  kv_group?: number;
  weights: string[];
  /** Leave-one-in vs dense: Δ of the audit statistic (e.g. % stereotypical choices), its paired bootstrap 95% CI, test, p. */
  delta: number | null;
  ci95: [number, number] | null;
  test: string | null;
  p: number | null;
  /** Holm–Bonferroni across the units of this benchmark. */
  pHolm: number | null;
  significant: boolean | null;
  /** Leave-one-in vs dense: mean Δ of the continuous item score (what `predicted` predicts). */
  score_delta: number | null;
  /** First-order prediction of score_delta from the dense model's gradient (null without one). */
  predicted: number | null;
  /** Leave-one-in quality proxy minus dense. */
  quality_delta: number | null;
  /** Leave-one-out (everything but this unit) vs the full variant: Δ of the audit statistic and its CI. */
  leave_one_out_delta: number | null;
  leave_one_out_ci95: [number, number] | null;
  cie_overlap: CieOverlap | null;
  /** Flipped items of the leave-one-in run (top 10 by |Δ score|, with text). */
  exemplars: { id: string; group: string; direction: string; text?: string }[];
}

export interface LocatedBenchmark {
  benchmark: string;
  scorer: string;
  metric: string;
  neutral: number;
  dense: number | null;
  /** The full variant vs dense. */
  full: { delta: number; ci95: [number, number]; p: number; score_delta: number; predicted: number | null; flips: number } | null;
  units: LocatedUnit[];
  /** Spearman's ρ over units: predicted vs measured Δ of the audit statistic, and vs measured Δ item score. */
  spearman_predicted_measured: number | null;
  spearman_predicted_score_delta: number | null;
  /**
   * J = Σ item scores as the gradient graph computed it (null for a linearized objective such as
   * StereoSet's, whose graph value is Σ ∂score/∂log P · log P), and as the benchmark run scored it (dense).
   */
  objective?: { graph: number | null; scored: number | null; items: number; seconds: number };
}

export interface LocateResults {
  tool: 'dike';
  command: 'locate';
  version: string;
  model: { dir: string; weightsSha256: string };
  variant: { name: string; spec: string; recipe: unknown };
  unit: UnitKind;
  /**
   * How a unit's leave-one-in and leave-one-out models were made: 'narrowed-recipe' (the variant's
   * recipe with every step's scope narrowed to the unit / excluding it), 'spliced' (head units: the
   * dense model with the unit's entries taken from the full variant / the variant with them restored)
   * or 'removed' (--variant none: the head's output-projection columns set to zero).
   */
  unit_models: 'narrowed-recipe' | 'spliced' | 'removed';
  seed: number;
  resamples: number;
  alpha: number;
  limit: number | null;
  quality: { dense: number; full: number | null; kind: string } | null;
  benchmarks: LocatedBenchmark[];
  data: DataFileRecord[];
}

// ---- jobs -------------------------------------------------------------------------------------

/** A recipe as it enters a key: calibration by content (SHA-256), not by path. */
function recipeForKey(recipe: Recipe): unknown {
  const { calibration, ...rest } = recipe;
  return JSON.parse(
    JSON.stringify({
      ...rest,
      ...(calibration ? { calibration: { samples: calibration.samples, seqLen: calibration.seqLen, sha256: sha256File(calibration.file) } } : {}),
    }),
  );
}

/** A model to evaluate: what identifies it in the store (with the dense weights), and how to build it. */
interface Job {
  key: unknown;
  build(): Promise<{ ckpt: Checkpoint; quantized?: ReadonlyMap<string, QuantState> }>;
}

/** `base` with the given entries of each weight taken from `from` (head units). */
function splice(base: Checkpoint, from: ReadonlyMap<string, Param>, entries: ReadonlyMap<string, Int32Array>): Checkpoint {
  const params = new Map(base.params);
  for (const [w, idx] of entries) {
    const p = base.params.get(w)!;
    const src = from.get(w)!.data;
    const data = p.data.slice();
    for (const i of idx) data[i] = src[i]!;
    params.set(w, { ...p, data, dtype: 'F32' });
  }
  return { ...base, params };
}

interface Evaluated {
  results: Map<string, BenchmarkResult>;
  quality?: number;
  qualityKind?: string;
}

class Jobs {
  private readonly dataHashes = new Map<string, { hash: string; records: DataFileRecord[] }>();
  readonly quality: { lines: string[]; hash: string; file: string };

  constructor(
    readonly req: LocateRequest,
    readonly dense: Checkpoint,
    readonly denseHashes: ModelHashes,
    readonly plan: { benchmark: Benchmark; scorer: string }[],
    readonly store: Store,
  ) {
    for (const { benchmark } of plan) this.dataHashes.set(benchmark.name, hashDataFolder(req.dataDir, benchmark.dataset.folder));
    const file = req.qualityFile ?? path.join(req.dataDir, 'lm_corpus', 'valid.txt');
    this.quality = { ...readQualityLines(file, req.qualityLines), file };
  }

  get data(): DataFileRecord[] {
    const d = [...this.dataHashes.values()].flatMap((h) => h.records);
    if (this.quality.lines.length > 0) d.push({ file: `${path.basename(path.dirname(this.quality.file))}/${path.basename(this.quality.file)} (first ${this.quality.lines.length} lines)`, sha256: this.quality.hash });
    return d;
  }

  /** Compress (in memory) the dense model with `recipe`: a checkpoint over the new parameters. */
  async compress(recipe: Recipe): Promise<{ ckpt: Checkpoint; result: CompressionResult }> {
    const result = await applyRecipe(this.dense, recipe, this.req.threads !== undefined ? { threads: this.req.threads } : {});
    const arch = result.config !== undefined ? { ...resolveArchitecture(new ConfigReader(result.config, this.dense.configFile)), rawConfig: result.config } : {};
    return { ckpt: { ...this.dense, ...arch, params: result.params }, result };
  }

  /** A job that compresses the dense model with a recipe (in memory). */
  recipeJob(recipe: Recipe): Job {
    return {
      key: { applied_in_memory_to: this.denseHashes.weightsSha256, recipe: recipeForKey(recipe) },
      build: async () => {
        const { ckpt, result } = await this.compress(recipe);
        return { ckpt, quantized: result.quantized };
      },
    };
  }

  /** Every benchmark (and the quality proxy) on the dense model (job undefined) or a modified one. */
  async evaluate(name: string, job: Job | undefined): Promise<Evaluated> {
    const rec = this.store.upsertModel({
      ...this.denseHashes,
      role: job === undefined ? 'dense' : 'variant',
      name,
      dir: this.dense.dir,
      recipe: job === undefined ? null : job.key,
    });
    let built: Promise<{ ckpt: Checkpoint; quantized?: ReadonlyMap<string, QuantState> }> | undefined;
    const model = (): Promise<{ ckpt: Checkpoint; quantized?: ReadonlyMap<string, QuantState> }> => (job === undefined ? Promise.resolve({ ckpt: this.dense }) : (built ??= job.build()));
    let runner: Promise<ModelRunner> | undefined;
    const getRunner = (): Promise<ModelRunner> =>
      (runner ??= model().then(({ ckpt, quantized }) =>
        ModelRunner.create(ckpt, { ...(this.req.threads !== undefined ? { threads: this.req.threads } : {}), ...(quantized ? { quantized } : {}) }),
      ));
    const getCkpt = async (): Promise<Checkpoint> => (await model()).ckpt;
    const settings = { seed: this.req.seed, resamples: this.req.resamples, limit: this.req.limit, dataDir: this.req.dataDir, ...(this.req.onProgress ? { onProgress: this.req.onProgress } : {}) };
    try {
      const results = new Map<string, BenchmarkResult>();
      for (const { benchmark, scorer } of this.plan) {
        results.set(benchmark.name, await measureOne(this.store, getCkpt, getRunner, rec.id, rec.key, benchmark, scorer, settings, this.dataHashes.get(benchmark.name)!, `${name} ${benchmark.name}`));
      }
      if (this.quality.lines.length === 0) return { results };
      const q = await measureQuality(this.store, rec, getCkpt, getRunner, settings, this.quality, `${name} quality`);
      return { results, quality: q.value, qualityKind: q.kind };
    } finally {
      if (runner !== undefined) await (await runner).dispose();
    }
  }
}

// ---- statistics -------------------------------------------------------------------------------

function meanScoreDelta(dense: readonly ItemScore[], other: readonly ItemScore[]): number {
  const byId = new Map(other.map((i) => [i.id, i.score]));
  let s = 0;
  let n = 0;
  for (const d of dense) {
    const o = byId.get(d.id);
    if (o === undefined) throw new DikeError('', `item ${d.id}`, 'missing from a compared run');
    if (Number.isFinite(d.score) && Number.isFinite(o)) (s += o - d.score, n++);
  }
  return n === 0 ? NaN : s / n;
}

function binary(items: readonly ItemScore[]): boolean {
  return items.length > 0 && items.every((i) => i.outcome === 0 || i.outcome === 1 || i.outcome === null);
}

function cieOverlap(dense: readonly ItemScore[], full: readonly ItemScore[], unit: readonly ItemScore[]): CieOverlap {
  const f = flips(dense, full).flips;
  const u = flips(dense, unit).flips;
  const fIds = new Set(f.map((x) => x.id));
  const uIds = new Set(u.map((x) => x.id));
  const shared = [...uIds].filter((id) => fIds.has(id)).length;
  const union = fIds.size + uIds.size - shared;
  const byGroup: CieOverlap['byGroup'] = {};
  for (const x of f) (byGroup[x.group] ??= { full: 0, unit: 0, shared: 0 }).full++;
  for (const x of u) {
    const g = (byGroup[x.group] ??= { full: 0, unit: 0, shared: 0 });
    g.unit++;
    if (fIds.has(x.id)) g.shared++;
  }
  return { full: fIds.size, unit: uIds.size, shared, jaccard: union === 0 ? NaN : shared / union, byGroup };
}

// ---- locate -----------------------------------------------------------------------------------

function writeAtomic(file: string, text: string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}

export async function runLocate(req: LocateRequest): Promise<LocateResults> {
  const log = req.log ?? (() => undefined);
  const recipe = req.variant.recipe;
  // --variant none with head units: remove each head of the dense model (zero its columns of the output
  // projection), the FASP view of heads whose removal raises or lowers bias.
  const removal = recipe === undefined && req.variant.spec === 'none';
  if (removal && req.unit !== 'head') throw new DikeError('', '--variant', '"none" (head removal on the dense model) needs --unit head');
  if (recipe === undefined && !removal) throw new DikeError(req.variant.dir ?? '', '--variant', 'locate needs a recipe or method spec (a compressed directory cannot be narrowed to one unit)');
  mkdirSync(req.out, { recursive: true });
  const dense = loadCheckpoint(req.model);
  const plan = planMeasure(dense, { benchmarks: req.benchmarks, dataDir: req.dataDir, ...(req.scorer !== undefined ? { scorer: req.scorer } : {}) });
  const linears = dense.family.linears(dense.config, dense.task);
  let units = unitsOf(linears, recipe, req.unit, dense.shape);
  if (removal) {
    // Removing a head's output: only its columns of the output projection change.
    const outputs = new Set(linears.filter((l) => l.role === 'o').map((l) => l.weight));
    // (Grouped-query attention: the key/value group units have no output columns and are left out.)
    units = units.filter((u) => u.head !== undefined).map((u) => ({ ...u, weights: u.weights.filter((w) => outputs.has(w)), entries: new Map([...u.entries!].filter(([w]) => outputs.has(w))) }));
  }
  if (units.length === 0) throw new DikeError('', '--variant', `${req.variant.spec || req.variant.name} compresses no attention or FFN matrix of this model`);
  const store = openStore(req.storeFile ?? storePath(req.out));
  try {
    const jobs = new Jobs(req, dense, hashModelDir(req.model), plan, store);
    const denseEval = await jobs.evaluate('dense', undefined);
    const fullEval = req.predictOnly || removal ? undefined : await jobs.evaluate(req.variant.name, jobs.recipeJob(recipe!));
    // The weights each unit is compared against: the full variant's, or zeros (head removal).
    let fullParams: Map<string, Param> | undefined;
    const target = async (): Promise<Map<string, Param>> => {
      if (fullParams !== undefined) return fullParams;
      if (removal) {
        fullParams = new Map(dense.params);
        for (const u of units) for (const w of u.weights) fullParams.set(w, { ...dense.params.get(w)!, data: new Float32Array(dense.params.get(w)!.data.length) });
        return fullParams;
      }
      return (fullParams = (await jobs.compress(recipe!)).result.params);
    };
    const variantKey = removal ? 'remove-head' : recipeForKey(recipe!);
    const inJob = (u: Unit): Job =>
      u.entries !== undefined
        ? { key: { applied_in_memory_to: jobs.denseHashes.weightsSha256, variant: variantKey, unit: u.label, mode: 'leave-one-in' }, build: async () => ({ ckpt: splice(dense, await target(), u.entries!) }) }
        : jobs.recipeJob(leaveOneIn(linears, recipe!, u)!);
    const outJob = (u: Unit): Job | 'dense' => {
      if (u.entries !== undefined) {
        return { key: { applied_in_memory_to: jobs.denseHashes.weightsSha256, variant: variantKey, unit: u.label, mode: 'leave-one-out' }, build: async () => ({ ckpt: splice({ ...dense, params: await target() }, dense.params, u.entries!) }) };
      }
      const r = leaveOneOut(linears, recipe!, u);
      return r === undefined ? 'dense' : jobs.recipeJob(r);
    };

    // First-order prediction: one gradient of each benchmark's objective at the dense weights.
    const predicted = new Map<string, { units: number[]; full: number; graph: number | null; items: number; seconds: number }>();
    if (req.predict !== false) {
      const after = await target();
      const wrt = [...new Set(units.flatMap((u) => u.weights))];
      for (const { benchmark, scorer } of plan) {
        if (benchmark.objective === undefined) continue;
        const t0 = performance.now();
        // A linearized objective (StereoSet) reads the dense model's log-probabilities first.
        const runner = await ModelRunner.create(dense, req.threads !== undefined ? { threads: req.threads } : {});
        const items = await benchmark.objective({ ckpt: dense, runner, dataDir: req.dataDir }, { scorer, ...(req.limit !== undefined ? { limit: req.limit } : {}) }).finally(() => runner.dispose());
        const linearized = items.some((i) => i.linearized === true);
        const g = await objectiveGradient(dense, items, wrt, {
          ...(req.threads !== undefined ? { threads: req.threads } : {}),
          padId: dense.tokenizer.special.pad ?? 0,
          onProgress: (d, t) => req.onProgress?.(`gradient ${benchmark.name}`, d, t),
        });
        const n = items.length;
        predicted.set(benchmark.name, {
          units: units.map((u) => (u.entries !== undefined ? firstOrderChangeAt(g.grads, dense.params, after, u.entries) : firstOrderChange(g.grads, dense.params, after, u.weights)) / n),
          full: firstOrderChange(g.grads, dense.params, after, wrt) / n,
          graph: linearized ? null : g.objective,
          items: n,
          seconds: (performance.now() - t0) / 1000,
        });
      }
    }

    // Measured runs, largest predicted |Δ| first where there is a prediction.
    const firstPrediction = [...predicted.values()][0];
    let order = units.map((_, i) => i);
    if (firstPrediction !== undefined) order = byMagnitude(firstPrediction.units);
    if (req.top !== undefined) order = order.slice(0, req.top);
    const inEval = new Map<number, Evaluated>();
    const outEval = new Map<number, Evaluated | 'dense'>();
    if (!req.predictOnly) {
      for (const i of order) {
        const u = units[i]!;
        log(`unit ${u.label}`);
        inEval.set(i, await jobs.evaluate(`in:${u.label}`, inJob(u)));
        if (req.leaveOneOut !== false && !removal) {
          const j = outJob(u);
          outEval.set(i, j === 'dense' ? 'dense' : await jobs.evaluate(`out:${u.label}`, j));
        }
      }
    }

    const benchmarks: LocatedBenchmark[] = plan.map(({ benchmark, scorer }) => {
      const name = benchmark.name;
      const dr = denseEval.results.get(name)!;
      const fr = fullEval?.results.get(name);
      const texts = new Map<string, string>();
      for (const it of dr.items) if (typeof it.detail?.['text'] === 'string') texts.set(it.id, it.detail['text'] as string);
      const pred = predicted.get(name);
      const cmp = (base: BenchmarkResult, other: BenchmarkResult, label: string) => compareVariant(name, benchmark.auditStatistic, base, other, label, req.seed, req.resamples, req.alpha, texts);
      const located: LocatedUnit[] = units.map((u, i) => {
        const ev = inEval.get(i)?.results.get(name);
        const c = ev ? cmp(dr, ev, u.label) : undefined;
        const out = outEval.get(i);
        const outResult = out === 'dense' ? dr : out?.results.get(name);
        const lo = outResult && fr ? cmp(fr, outResult, `out:${u.label}`) : undefined;
        const q = inEval.get(i)?.quality;
        return {
          unit: u.label,
          layer: u.layer,
          module: u.module,
          ...(u.matrix !== undefined ? { matrix: u.matrix } : {}),
          ...(u.head !== undefined ? { head: u.head } : {}),
          ...(u.kvGroup !== undefined ? { kv_group: u.kvGroup } : {}),
          weights: u.weights,
          delta: c?.overall.delta ?? null,
          ci95: c?.overall.deltaCi95 ?? null,
          test: c?.overall.test ?? null,
          p: c?.overall.p ?? null,
          pHolm: null,
          significant: null,
          score_delta: ev ? meanScoreDelta(dr.items, ev.items) : null,
          predicted: pred?.units[i] ?? null,
          quality_delta: q !== undefined && denseEval.quality !== undefined ? q - denseEval.quality : null,
          leave_one_out_delta: lo?.overall.delta ?? null,
          leave_one_out_ci95: lo?.overall.deltaCi95 ?? null,
          cie_overlap: ev && fr && binary(dr.items) ? cieOverlap(dr.items, fr.items, ev.items) : null,
          exemplars: (c?.exemplars ?? []).slice(0, 10).map((x) => ({ id: x.id, group: x.group, direction: x.direction, ...(x.text !== undefined ? { text: x.text } : {}) })),
        };
      });
      // Holm across the measured units.
      const measured = located.filter((u) => u.p !== null);
      const adj = holm(measured.map((u) => (Number.isFinite(u.p!) ? u.p! : 1)));
      measured.forEach((u, k) => ((u.pHolm = adj[k]!), (u.significant = adj[k]! < req.alpha)));
      const both = located.filter((u) => u.predicted !== null && u.delta !== null);
      const fullCmp = fr ? cmp(dr, fr, req.variant.name) : undefined;
      const scored = dr.items.reduce((s, i) => s + i.score, 0);
      return {
        benchmark: name,
        scorer,
        metric: dr.metric,
        neutral: neutralScore(name),
        dense: dr.score,
        full: fullCmp && fr ? { delta: fullCmp.overall.delta, ci95: fullCmp.overall.deltaCi95, p: fullCmp.overall.p, score_delta: meanScoreDelta(dr.items, fr.items), predicted: pred?.full ?? null, flips: fullCmp.flips.total } : null,
        units: located,
        spearman_predicted_measured: both.length >= 2 ? spearman(both.map((u) => u.predicted!), both.map((u) => u.delta!)) : null,
        spearman_predicted_score_delta: both.length >= 2 ? spearman(both.map((u) => u.predicted!), both.map((u) => u.score_delta!)) : null,
        ...(pred ? { objective: { graph: pred.graph, scored: Number.isFinite(scored) ? scored : null, items: pred.items, seconds: pred.seconds } } : {}),
      };
    });
    const results: LocateResults = {
      tool: 'dike',
      command: 'locate',
      version: dikeVersion(),
      model: { dir: req.model, weightsSha256: jobs.denseHashes.weightsSha256 },
      variant: { name: req.variant.name, spec: req.variant.spec, recipe: recipe === undefined ? null : recipeForKey(recipe) },
      unit: req.unit,
      unit_models: removal ? 'removed' : req.unit === 'head' ? 'spliced' : 'narrowed-recipe',
      seed: req.seed,
      resamples: req.resamples,
      alpha: req.alpha,
      limit: req.limit ?? null,
      quality: denseEval.quality !== undefined ? { dense: denseEval.quality, full: fullEval?.quality ?? null, kind: denseEval.qualityKind! } : null,
      benchmarks,
      data: jobs.data,
    };
    writeAtomic(path.join(req.out, 'locate.json'), JSON.stringify(results, null, 2) + '\n');
    writeAtomic(path.join(req.out, 'report.html'), renderLocateReport(results));
    return results;
  } finally {
    store.close();
  }
}

