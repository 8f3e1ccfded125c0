/**
 * The audit (Dikē's main job): a dense model against compressed variants on bias benchmarks, paired
 * item by item.
 *
 *   variants (recipes, method specs, sweeps, or ready directories) ──compress──► <out>/variants/<name>/
 *   (dense + variants) × benchmarks ──► experiment store (content-hashed; finished work is reused)
 *   paired statistics per group (bootstrap Δ, McNemar / permutation, Holm) + CIEs (flips, Fisher)
 *   ──► results.json + report.html
 *
 * Every step is keyed by content hashes (weights, recipe, data, options, tool version), so rerunning
 * after a crash or kill -9 recomputes nothing that finished, and a changed input is recomputed.
 */
import { sha256File, sha256FileStreamed, sha256Text } from '../util/hash.js';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { DikeError } from '../errors.js';
import { loadCheckpoint, type Checkpoint } from '../model/checkpoint.js';
import { ModelRunner } from '../runtime/session.js';
import { heldOutPerplexity } from '../score/perplexity.js';
import { applyRecipe, parseRecipe, readRecipe, writeCompressed, type Recipe } from '../compress/recipe.js';
import { findBenchmark, itemsOverlap } from '../measure/registry.js';
import { planMeasure } from '../measure/run.js';
import type { Benchmark, BenchmarkResult, DataFileRecord, ItemScore, ScoreCI } from '../measure/types.js';
import { bootstrapCI, subSeed } from '../measure/stats/bootstrap.js';
import { dikeVersion } from '../version.js';
import { canonicalJson, hashModelDir, openStore, runKey, storePath, type Store } from './store.js';
import { discordantCounts, holm, mcnemarExact, pairOutcomes, pairedBootstrapDelta, pairedPermutationTest } from './paired.js';
import { flipCountsByGroup, flips, overRepresentation } from './cie.js';
import type { AuditResults, BenchmarkAudit, DataSeen, Exemplar, ModelEntry, PairedCell, VariantComparison } from './types.js';
import { modelSize } from './size.js';
import { renderReport } from './report/html.js';
import { sentencePairs } from '../measure/pairs.js';
import { counterfactualDir } from '../measure/counterfactual.js';

/** The option a sweep varies, per method (`--sweep "magnitude:0.1,0.3"` sets sparsity). */
export const SWEEP_PARAMETER: Readonly<Record<string, string>> = {
  magnitude: 'sparsity',
  wanda: 'sparsity',
  sparsegpt: 'sparsity',
  heads: 'fraction',
  neurons: 'fraction',
  layers: 'remove',
  rtn: 'bits',
  gptq: 'bits',
  'fair-gptq': 'alpha',
  'fair-wanda': 'sparsity',
  'fair-sparsegpt': 'sparsity',
  'fair-heads': 'fraction',
  fasp: 'fraction',
  'mixed-precision': 'avg_bits',
};

export interface VariantSpec {
  name: string;
  /** A recipe to apply, or a directory holding an already-compressed model. */
  recipe?: Recipe;
  dir?: string;
  spec: string;
  family?: string;
  level?: number;
}

export interface AuditRequest {
  model: string;
  variants: VariantSpec[];
  benchmarks: string[];
  scorer?: string;
  dataDir: string;
  out: string;
  seed: number;
  resamples: number;
  alpha: number;
  limit?: number;
  threads?: number;
  /** Lines of the held-out text for (pseudo-)perplexity, from its start; 0 = skip. */
  qualityLines: number;
  /** The held-out text (default: the data directory's lm_corpus/valid.txt). */
  qualityFile?: string;
  onProgress?: (label: string, done: number, total: number) => void;
  log?: (line: string) => void;
}


// ---- variant specs ----------------------------------------------------------------------------

/** "method:key=value,key=value" → a one-step recipe. */
export function variantFromMethodSpec(spec: string, calibration: Recipe['calibration'], seed: number): VariantSpec {
  const colon = spec.indexOf(':');
  const method = colon < 0 ? spec : spec.slice(0, colon);
  const step: Record<string, unknown> = { method };
  if (colon >= 0) {
    for (const kv of spec.slice(colon + 1).split(',').filter((s) => s !== '')) {
      const eq = kv.indexOf('=');
      if (eq <= 0) throw new DikeError('', '--variant', `"${spec}": expected method:key=value,…`);
      step[kv.slice(0, eq)] = kv.slice(eq + 1);
    }
  }
  const recipe = parseRecipe(JSON.stringify({ seed, ...(calibration ? { calibration: { file: calibration.file, samples: calibration.samples, seq_len: calibration.seqLen } } : {}), steps: [step] }), 'variant.json');
  const name = [method, ...Object.entries(step).filter(([k]) => k !== 'method').map(([k, v]) => `${k}${v}`)].join('-').replace(/[^A-Za-z0-9_.-]/g, '_');
  return { name, recipe, spec };
}

/** "magnitude:0.1,0.3,0.5" → one variant per level. */
export function sweepVariants(sweep: string, calibration: Recipe['calibration'], seed: number): VariantSpec[] {
  const colon = sweep.indexOf(':');
  if (colon <= 0) throw new DikeError('', '--sweep', `"${sweep}": expected method:level,level,… (e.g. magnitude:0.1,0.3,0.5)`);
  const method = sweep.slice(0, colon);
  const param = SWEEP_PARAMETER[method];
  if (param === undefined) throw new DikeError('', '--sweep', `no sweep parameter for method "${method}" (sweepable: ${Object.keys(SWEEP_PARAMETER).join(', ')})`);
  const levels = sweep.slice(colon + 1).split(',').filter((s) => s.trim() !== '').map(Number);
  if (levels.length === 0 || levels.some((l) => !Number.isFinite(l))) throw new DikeError('', '--sweep', `"${sweep}": levels must be numbers`);
  return levels.map((level) => ({ ...variantFromMethodSpec(`${method}:${param}=${level}`, calibration, seed), family: method, level }));
}

/** A --variant argument: a directory (already compressed), a recipe file, or a method spec. */
export function parseVariant(arg: string, calibration: Recipe['calibration'], seed: number): VariantSpec {
  if (existsSync(arg) && statSync(arg).isDirectory()) return { name: path.basename(path.resolve(arg)), dir: arg, spec: `directory ${arg}` };
  if (/\.(ya?ml|json)$/.test(arg)) {
    const recipe = readRecipe(arg);
    if (recipe.calibration === undefined && calibration !== undefined) recipe.calibration = calibration;
    return { name: path.basename(arg).replace(/\.(ya?ml|json)$/, ''), recipe, spec: `recipe ${path.basename(arg)}` };
  }
  return variantFromMethodSpec(arg, calibration, seed);
}

// ---- data hashing -----------------------------------------------------------------------------

/** SHA-256 over every file of a dataset folder (names and contents), so any change is seen. */
export function hashDataFolder(dataDir: string, folder: string): { hash: string; records: DataFileRecord[] } {
  const dir = path.join(dataDir, folder);
  if (!existsSync(dir)) return { hash: sha256Text(`absent:${folder}`), records: [] };
  const records = readdirSync(dir)
    .filter((f) => statSync(path.join(dir, f)).isFile())
    .sort()
    .map((f) => ({ file: `${folder}/${f}`, sha256: sha256File(path.join(dir, f)) }));
  return { hash: sha256Text(canonicalJson(records)), records };
}

// ---- compressing variants ---------------------------------------------------------------------

/**
 * The content of the files a recipe reads besides the model (calibration text or token ids, sentence
 * pairs), so that an edited calibration file or pair set recompresses the variant instead of reusing it.
 */
function recipeInputs(recipe: Recipe, dataDir: string, qualityFile: string): Record<string, string> {
  const inputs: Record<string, string> = {};
  const file = (f: string): string => (existsSync(f) ? sha256FileStreamed(f) : 'absent');
  if (recipe.calibration !== undefined) inputs['calibration'] = file(recipe.calibration.file);
  if (recipe.calibrationTokens !== undefined) inputs['calibration_tokens'] = file(recipe.calibrationTokens.file);
  recipe.steps.forEach((st, i) => {
    const budget = st.options['quality_budget'];
    if (budget !== undefined && Number(budget) > 0) inputs[`step ${i + 1} held-out`] = file(qualityFile);
    // Critical Weight Protection reads per-weight saliency scores from a file.
    const saliency = st.options['saliency'];
    if (typeof saliency === 'string') inputs[`step ${i + 1} saliency`] = file(path.resolve(saliency));
    const pairs = st.options['pairs'];
    // mixed-precision's sensitivity table (a locate.json).
    const locate = st.options['locate'];
    if (typeof locate === 'string') inputs[`step ${i + 1} locate`] = file(path.resolve(locate));
    if (typeof pairs !== 'string') return;
    // Negative controls name their base source after a prefix (shuffled:stereoset); counterfactual
    // pairs come from the calibration text (hashed above, else the default) and the shipped word lists.
    const base = pairs.replace(/^(shuffled|unrelated):/, '');
    const lists = hashDataFolder(path.dirname(counterfactualDir()), 'counterfactual').hash;
    inputs[`step ${i + 1} pairs`] =
      base === 'stereoset' || base === 'crows-pairs'
        ? hashDataFolder(dataDir, base).hash
        : base === 'counterfactual'
          ? `${lists} ${recipe.calibration === undefined ? file(path.join(dataDir, 'lm_corpus', 'train.txt')) : ''}`
          : base.startsWith('counterfactual:')
            ? `${lists} ${file(path.resolve(base.slice('counterfactual:'.length)))}`
            : file(path.resolve(base));
  });
  return inputs;
}

/**
 * What a model saw besides its own training: a variant's calibration text and debiasing pairs (from its
 * recipe), or a testbed's fine-tuning corpora (testbed.json in its directory).
 */
export function dataSeen(recipe: Recipe | undefined, dir: string, dataDir: string): DataSeen | undefined {
  const seen: DataSeen = {};
  const file = (f: string): string => (existsSync(f) ? sha256FileStreamed(f) : 'absent');
  if (recipe?.calibration !== undefined) seen.calibration = { file: path.basename(recipe.calibration.file), sha256: file(recipe.calibration.file) };
  recipe?.steps.forEach((st, i) => {
    const pairs = st.options['pairs'];
    if (typeof pairs !== 'string') return;
    const bench = pairs.slice(pairs.lastIndexOf(':') + 1);
    const sha = bench === 'stereoset' || bench === 'crows-pairs' ? hashDataFolder(dataDir, bench).hash : existsSync(path.resolve(pairs)) ? file(path.resolve(pairs)) : 'generated';
    (seen.pairs ??= []).push({ step: i + 1, method: st.method, source: pairs, sha256: sha });
  });
  // A model trained or distilled with the counterfactual gap penalty (`dike train|distill --cf-pairs`):
  // its training.json names the pairs' source.
  const tj = path.join(dir, 'training.json');
  if (existsSync(tj)) {
    const t = JSON.parse(readFileSync(tj, 'utf8')) as { settings?: { counterfactual?: { source?: unknown } }; teacher?: unknown };
    const source = t.settings?.counterfactual?.source;
    if (typeof source === 'string') {
      const sha = source === 'stereoset' || source === 'crows-pairs' ? hashDataFolder(dataDir, source).hash : existsSync(path.resolve(source)) ? file(path.resolve(source)) : 'absent';
      (seen.pairs ??= []).push({ step: (recipe?.steps.length ?? 0) + 1, method: t.teacher !== undefined ? 'distill --cf-pairs' : 'train --cf-pairs', source, sha256: sha });
    }
  }
  const tb = path.join(dir, 'testbed.json');
  if (existsSync(tb)) {
    const t = JSON.parse(readFileSync(tb, 'utf8')) as { testbed: string; corpora: Record<string, { sha256: string }>; benchmarksSeen?: string[] };
    seen.training = { testbed: t.testbed, corpora: Object.fromEntries(Object.entries(t.corpora).map(([k, v]) => [k, v.sha256])), benchmarks: t.benchmarksSeen ?? [] };
  }
  return Object.keys(seen).length > 0 ? seen : undefined;
}

/**
 * Overlaps between the data each model saw and the benchmarks scored, one line each: debiasing pairs
 * drawn from a scored benchmark (`pairs=stereoset` audited on stereoset, `shuffled:stereoset` too, or a
 * pairs/calibration file inside a scored benchmark's data folder), or a testbed trained on its items.
 * A variant's Δ on such a benchmark is not a held-out result.
 */
export function overlapWarnings(models: readonly Pick<ModelEntry, 'name' | 'saw'>[], scored: readonly { name: string; folder: string }[], dataDir: string): string[] {
  const out: string[] = [];
  const inFolder = (f: string, folder: string): boolean => {
    const rel = path.relative(path.resolve(dataDir, folder), path.resolve(f));
    return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel);
  };
  for (const m of models) {
    const s = m.saw;
    if (s === undefined) continue;
    for (const b of scored) {
      for (const p of s.pairs ?? []) {
        const named = itemsOverlap(p.source.slice(p.source.lastIndexOf(':') + 1), b.name);
        if (named || inFolder(p.source, b.folder)) {
          out.push(`warning: ${m.name} was debiased (step ${p.step}, ${p.method}) with pairs from ${b.name} (pairs=${p.source}), which this audit scores: its Δ on ${b.name} is not held out`);
        }
      }
      if (s.training?.benchmarks.some((seen) => itemsOverlap(seen, b.name))) out.push(`warning: ${m.name} was trained (testbed ${s.training.testbed}) on ${b.name} items, which this audit scores: its results on ${b.name} are not held out`);
    }
  }
  return out;
}

/** Compress a variant into <out>/variants/<name> unless a finished copy with the same recipe and inputs is there. */
async function materialise(dense: Checkpoint, v: VariantSpec, out: string, threads: number | undefined, dataDir: string, qualityFile: string, log: (l: string) => void): Promise<string> {
  if (v.dir !== undefined) return v.dir;
  const recipe = v.recipe!;
  const dir = path.join(out, 'variants', v.name);
  const want = sha256Text(canonicalJson({ dense: hashModelDir(dense.dir).weightsSha256, recipe, inputs: recipeInputs(recipe, dataDir, qualityFile) }));
  const marker = path.join(dir, '.dike-recipe-sha256');
  if (existsSync(marker) && readFileSync(marker, 'utf8') === want) return dir;
  const tmp = `${dir}.partial`;
  rmSync(tmp, { recursive: true, force: true });
  log(`compressing ${v.name}`);
  // Sentence pairs (fair-gptq) come from the audit's data directory.
  // Counterfactual pairs default to lm_corpus/train.txt when the recipe names no calibration text;
  // fair-gptq's quality_budget reads the audit's own held-out text.
  const result = await applyRecipe(dense, recipe, {
    ...(threads !== undefined ? { threads } : {}),
    pairs: (req) => sentencePairs(dataDir, { textFile: path.join(dataDir, 'lm_corpus', 'train.txt'), ...req }),
    heldOut: (n) => readQualityLines(qualityFile, n).lines,
  });
  writeCompressed(dense, result, recipe, tmp);
  writeFileSync(path.join(tmp, '.dike-recipe-sha256'), want);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(path.dirname(dir), { recursive: true });
  renameSync(tmp, dir);
  return dir;
}

// ---- statistics -------------------------------------------------------------------------------

type AuditStatistic = NonNullable<Benchmark['auditStatistic']>;

/** Per-item values of what the audit compares: 100·outcome, the score, or |score|. */
function itemStatistic(items: readonly ItemScore[], kind?: AuditStatistic): { values: Float64Array; binary: boolean } {
  const binary = (kind === undefined || kind === 'outcome-rate') && items.length > 0 && items.every((i) => i.outcome === 0 || i.outcome === 1);
  const value = (i: ItemScore): number => (binary ? 100 * (i.outcome as number) : kind === 'mean-abs-score' ? Math.abs(i.score) : i.score);
  return { values: Float64Array.from(items, value), binary };
}

function pairedCell(dense: ItemScore[], variant: ItemScore[], seed: number, resamples: number, kind?: AuditStatistic): Omit<PairedCell, 'pHolm' | 'significant'> {
  // Items with an undefined outcome (excluded by the benchmark) are left out of both sides alike.
  const keep = new Set(dense.filter((d) => d.outcome !== null).map((d) => d.id));
  const d = dense.filter((i) => keep.has(i.id));
  const v = variant.filter((i) => keep.has(i.id));
  const paired = pairOutcomes(d, v);
  const ds = itemStatistic(d, kind);
  const vs = itemStatistic(v, kind);
  const binary = ds.binary && vs.binary;
  const abs = kind === 'mean-abs-score';
  const a = binary ? ds.values : Float64Array.from(paired.dense, (x) => (abs ? Math.abs(x) : x));
  const b = binary ? Float64Array.from(paired.compressedOutcome, (o) => 100 * (o as number)) : Float64Array.from(paired.compressed, (x) => (abs ? Math.abs(x) : x));
  const boot = pairedBootstrapDelta(a, b, { seed, resamples });
  const variantCI = bootstrapCI(b.length, (idx) => { let s = 0; for (const i of idx) s += b[i]!; return s / idx.length; }, { seed, resamples });
  let p = NaN;
  let test: PairedCell['test'] = 'none';
  if (a.length > 0) {
    if (binary) {
      const t = discordantCounts(paired.denseOutcome, paired.compressedOutcome);
      p = mcnemarExact(t.b, t.c);
      test = 'mcnemar';
    } else {
      p = pairedPermutationTest(a, b, { seed }).p;
      test = 'permutation';
    }
  }
  return { score: variantCI, delta: boot.delta, deltaCi95: boot.ci95, test, p };
}

export function compareVariant(bench: string, kind: AuditStatistic | undefined, dense: BenchmarkResult, variant: BenchmarkResult, name: string, seed: number, resamples: number, alpha: number, texts: Map<string, string>): VariantComparison {
  const overall = pairedCell(dense.items, variant.items, subSeed(seed, `${bench}/${name}`), resamples, kind);
  const groupsRaw: Record<string, Omit<PairedCell, 'pHolm' | 'significant'>> = {};
  for (const g of Object.keys(dense.groups)) {
    const di = dense.items.filter((i) => i.group === g);
    const vi = variant.items.filter((i) => i.group === g);
    if (di.length > 0) groupsRaw[g] = pairedCell(di, vi, subSeed(seed, `${bench}/${name}/${g}`), resamples, kind);
  }
  const names = Object.keys(groupsRaw);
  const adj = holm(names.map((g) => (Number.isFinite(groupsRaw[g]!.p) ? groupsRaw[g]!.p : 1)));
  const groups: Record<string, PairedCell> = {};
  names.forEach((g, i) => (groups[g] = { ...groupsRaw[g]!, pHolm: adj[i]!, significant: adj[i]! < alpha }));
  const binaryItems = dense.items.every((i) => i.outcome !== undefined);
  const f = binaryItems ? flips(dense.items, variant.items) : undefined;
  const byGroup = f
    ? (() => {
        const { flipsByGroup, itemsByGroup } = flipCountsByGroup(f);
        return overRepresentation(flipsByGroup, itemsByGroup).map((r) => ({
          group: r.group,
          items: r.items,
          flips: r.flips,
          flipRate: r.items === 0 ? NaN : r.flips / r.items,
          shareOfFlips: r.flipShare,
          shareOfItems: r.itemShare,
          fisherP: r.p,
          fisherPHolm: r.pHolm,
        }));
      })()
    : [];
  const exemplars: Exemplar[] = (f?.flips ?? [])
    .map((x) => ({ id: x.id, group: x.group, direction: x.direction, denseScore: x.denseScore, variantScore: x.compressedScore, ...(texts.has(x.id) ? { text: texts.get(x.id)! } : {}) }))
    .sort((p, q) => Math.abs(q.variantScore - q.denseScore) - Math.abs(p.variantScore - p.denseScore) || p.id.localeCompare(q.id))
    .slice(0, 20);
  return {
    variant: name,
    overall: { ...overall, pHolm: overall.p, significant: overall.p < alpha },
    groups,
    flips: {
      total: f?.total.flips ?? 0,
      rate: f?.total.rate ?? NaN,
      becameBiased: f?.total.becameBiased ?? 0,
      becameUnbiased: f?.total.becameUnbiased ?? 0,
      byGroup,
    },
    exemplars,
  };
}

/** The score that means "no bias" for a benchmark's headline. */
export function neutralScore(bench: string): number {
  return bench === 'seat' || bench === 'bbq' ? 0 : 50;
}

function denseSummary(r: BenchmarkResult, kind?: AuditStatistic): { overall: ScoreCI; groups: Record<string, ScoreCI> } {
  const { values } = itemStatistic(r.items.filter((i) => i.outcome !== null), kind);
  const overall = bootstrapCI(values.length, (idx) => { let s = 0; for (const i of idx) s += values[i]!; return s / idx.length; }, { seed: r.seed, resamples: r.resamples });
  const groups: Record<string, ScoreCI> = {};
  for (const g of Object.keys(r.groups)) {
    const { values: gv } = itemStatistic(r.items.filter((i) => i.group === g && i.outcome !== null), kind);
    groups[g] = bootstrapCI(gv.length, (idx) => { let s = 0; for (const i of idx) s += gv[i]!; return s / idx.length; }, { seed: subSeed(r.seed, g), resamples: r.resamples });
  }
  return { overall, groups };
}

/** The held-out quality proxy of one model through the store ((pseudo-)perplexity on the given lines). */
export async function measureQuality(
  store: Store,
  rec: { id: number; key: string },
  ckpt: Checkpoint | (() => Promise<Checkpoint>),
  getRunner: () => Promise<ModelRunner>,
  req: Pick<AuditRequest, 'seed' | 'resamples' | 'onProgress'>,
  held: { lines: readonly string[]; hash: string },
  label: string,
): Promise<NonNullable<ModelEntry['quality']>> {
  const options = { seed: req.seed, resamples: req.resamples, lines: held.lines.length };
  const key = runKey({ modelKey: rec.key, benchmark: 'quality', scorer: 'held-out', dataSha256: held.hash, options });
  const found = store.findRun(key);
  let r = found?.result;
  if (r === undefined) {
    req.onProgress?.(label, 0, 1);
    const h = store.beginRun({ modelId: rec.id, benchmark: 'quality', scorer: 'held-out', dataSha256: held.hash, options });
    const p = await heldOutPerplexity(typeof ckpt === 'function' ? await ckpt() : ckpt, await getRunner(), [...held.lines]);
    r = { benchmark: 'quality', scorer: 'held-out', metric: p.kind, score: p.value, ci95: [NaN, NaN], n: p.tokens, groups: {}, extra: { nll: p.nll }, items: [], data: [], seed: req.seed, resamples: req.resamples };
    store.finishRun(h.id, r);
    req.onProgress?.(label, 1, 1);
  }
  return { kind: r.metric, value: r.score, tokens: r.n };
}

/** The held-out lines of the quality proxy and their SHA-256 (none when `lines` is 0). */
export function readQualityLines(file: string, lines: number): { lines: string[]; hash: string } {
  const picked = lines > 0 ? (() => {
    if (!existsSync(file)) throw new DikeError(file, '', 'held-out text for the quality proxy is missing (set --quality-lines 0 to skip)');
    const all = readFileSync(file, 'utf8').split('\n').filter((l) => l !== '');
    if (all.length < lines) throw new DikeError(file, '', `the quality proxy asks for ${lines} lines but the file has ${all.length} (lower --quality-lines)`);
    return all.slice(0, lines);
  })() : [];
  return { lines: picked, hash: sha256Text(picked.join('\n')) };
}

// ---- the audit --------------------------------------------------------------------------------

/** What a stored benchmark run depends on besides the model and the data (part of its key). */
export type MeasureSettings = Pick<AuditRequest, 'seed' | 'resamples' | 'limit' | 'dataDir' | 'onProgress'>;

/** A benchmark run of one model through the store: the finished result if its key is there, else run and commit. */
export async function measureOne(
  store: Store,
  ckpt: Checkpoint | (() => Promise<Checkpoint>),
  runner: () => Promise<ModelRunner>,
  modelId: number,
  mKey: string,
  benchmark: Benchmark,
  scorer: string,
  req: MeasureSettings,
  data: { hash: string },
  label: string,
): Promise<BenchmarkResult> {
  const options = { seed: req.seed, resamples: req.resamples, limit: req.limit, mode: 'simulated' };
  const key = runKey({ modelKey: mKey, benchmark: benchmark.name, scorer, dataSha256: data.hash, options });
  const found = store.findRun(key);
  if (found) {
    req.onProgress?.(label, 1, 1);
    return found.result;
  }
  const handle = store.beginRun({ modelId, benchmark: benchmark.name, scorer, dataSha256: data.hash, options });
  const result = await benchmark.run(
    { ckpt: typeof ckpt === 'function' ? await ckpt() : ckpt, runner: await runner(), dataDir: req.dataDir },
    { scorer, seed: req.seed, resamples: req.resamples, ...(req.limit !== undefined ? { limit: req.limit } : {}), progress: (d, t) => req.onProgress?.(label, d, t) },
  );
  store.finishRun(handle.id, result);
  return result;
}

export async function runAudit(req: AuditRequest): Promise<AuditResults> {
  const log = req.log ?? (() => undefined);
  mkdirSync(req.out, { recursive: true });
  const dense = loadCheckpoint(req.model);
  const plan = planMeasure(dense, { benchmarks: req.benchmarks, dataDir: req.dataDir, ...(req.scorer !== undefined ? { scorer: req.scorer } : {}) });
  const names = new Set<string>();
  for (const v of req.variants) {
    if (names.has(v.name) || v.name === 'dense') throw new DikeError('', '--variant', `two variants are named "${v.name}"; give distinct specs`);
    names.add(v.name);
  }
  const store = openStore(storePath(req.out));
  const dataHashes = new Map(plan.map(({ benchmark }) => [benchmark.name, hashDataFolder(req.dataDir, benchmark.dataset.folder)]));
  const qualityFile = req.qualityFile ?? path.join(req.dataDir, 'lm_corpus', 'valid.txt');
  const { lines: qualityLines, hash: qualityHash } = readQualityLines(qualityFile, req.qualityLines);
  try {
    const models: { entry: ModelEntry; ckpt: Checkpoint; results: Map<string, BenchmarkResult> }[] = [];
    const all: (VariantSpec & { isDense?: boolean })[] = [{ name: 'dense', dir: req.model, spec: '', isDense: true }, ...req.variants];
    for (const v of all) {
      const dir = v.isDense ? req.model : await materialise(dense, v, req.out, req.threads, req.dataDir, qualityFile, log);
      const ckpt = v.isDense ? dense : loadCheckpoint(dir);
      if (ckpt.hfClass !== dense.hfClass) throw new DikeError(dir, '', `variant is a ${ckpt.hfClass}, the dense model a ${dense.hfClass}`);
      const hashes = hashModelDir(dir);
      const rec = store.upsertModel({ ...hashes, role: v.isDense ? 'dense' : 'variant', name: v.name, dir, recipe: v.recipe ?? null });
      let runner: ModelRunner | undefined;
      const getRunner = async (): Promise<ModelRunner> => (runner ??= await ModelRunner.create(ckpt, req.threads !== undefined ? { threads: req.threads } : {}));
      const results = new Map<string, BenchmarkResult>();
      try {
        for (const { benchmark, scorer } of plan) {
          results.set(benchmark.name, await measureOne(store, ckpt, getRunner, rec.id, rec.key, benchmark, scorer, req, dataHashes.get(benchmark.name)!, `${v.name} ${benchmark.name}`));
        }
        let quality: ModelEntry['quality'];
        if (qualityLines.length > 0) quality = await measureQuality(store, rec, ckpt, getRunner, req, { lines: qualityLines, hash: qualityHash }, `${v.name} quality`);
        const ss = results.get('stereoset')?.extra['lms'];
        if (quality && ss !== undefined) quality = { ...quality, lms: typeof ss === 'number' ? ss : ss.score };
        const entry: ModelEntry = {
          name: v.name,
          dir,
          spec: v.spec,
          weightsSha256: hashes.weightsSha256,
          ...(v.family !== undefined ? { family: v.family } : {}),
          ...(v.level !== undefined ? { level: v.level } : {}),
          ...(quality ? { quality } : {}),
          size: modelSize(ckpt),
        };
        const saw = dataSeen(v.recipe, dir, req.dataDir);
        if (saw !== undefined) entry.saw = saw;
        models.push({ entry, ckpt, results });
      } finally {
        await runner?.dispose();
      }
    }
    const [d, ...vs] = models;
    const benchmarks: BenchmarkAudit[] = plan.map(({ benchmark, scorer }) => {
      const dr = d!.results.get(benchmark.name)!;
      const texts = new Map<string, string>();
      for (const it of dr.items) if (typeof it.detail?.['text'] === 'string') texts.set(it.id, it.detail['text'] as string);
      return {
        benchmark: benchmark.name,
        scorer,
        metric: dr.metric,
        neutral: neutralScore(benchmark.name),
        dense: denseSummary(dr, benchmark.auditStatistic),
        variants: vs.map((m) => compareVariant(benchmark.name, benchmark.auditStatistic, dr, m.results.get(benchmark.name)!, m.entry.name, req.seed, req.resamples, req.alpha, texts)),
      };
    });
    const data = [...dataHashes.values()].flatMap((h) => h.records);
    // The held-out text of the quality proxy: the lines read (their SHA-256) and where they came from.
    if (qualityLines.length > 0) data.push({ file: `${path.basename(path.dirname(qualityFile))}/${path.basename(qualityFile)} (first ${qualityLines.length} lines)`, sha256: qualityHash });
    const warnings = overlapWarnings(models.map((m) => m.entry), plan.map(({ benchmark }) => ({ name: benchmark.name, folder: benchmark.dataset.folder })), req.dataDir);
    for (const w of warnings) log(w);
    const results: AuditResults = {
      tool: 'dike',
      version: dikeVersion(),
      seed: req.seed,
      resamples: req.resamples,
      alpha: req.alpha,
      dense: d!.entry,
      variants: vs.map((m) => m.entry),
      benchmarks,
      data,
      warnings,
    };
    writeAtomic(path.join(req.out, 'results.json'), JSON.stringify(results, null, 2) + '\n');
    writeAtomic(path.join(req.out, 'report.html'), renderReport(results));
    return results;
  } finally {
    store.close();
  }
}

function writeAtomic(file: string, text: string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}

export { findBenchmark };
