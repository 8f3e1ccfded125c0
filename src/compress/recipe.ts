/**
 * Recipes: a list of compression steps applied in order (YAML or JSON), recorded with the output as
 * compression.json. A step names a method, its options, a scope (modules, layers, name patterns) and
 * optional per-matrix overrides:
 *
 *   seed: 0
 *   calibration: { file: ../shared/data/lm_corpus/train.txt, samples: 128, seq_len: 128 }
 *   # or explicit token ids: { tokens: ids.json, batch_size: 2, keep_pads: true, pad_id: 50256 }
 *   steps:
 *     - method: magnitude
 *       sparsity: 0.5
 *       scope: { modules: [attention, ffn], layers: [0, 1] }
 *       overrides: { "*.attention.self.query.weight": { sparsity: 0.3 } }
 *     - method: rtn
 *       bits: 8
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { DikeError } from '../errors.js';
import { copyTokenizerFiles } from '../model/tokenizer.js';
import type { LinearInfo } from '../model/arch/types.js';
import { resolveArchitecture } from '../model/arch/registry.js';
import type { Checkpoint, Param } from '../model/checkpoint.js';
import { ConfigReader } from '../model/config.js';
import { fromFloat32, serializeSafetensors, type RawTensor } from '../model/safetensors.js';
import { sha256Bytes, sha256File } from '../util/hash.js';
import { dikeVersion } from '../version.js';
import { inputStats, readTokenCalibration, sampleCalibration, walkCalibration, type CalibrationSet, type CalibrationSpec } from './calibrate.js';
import { MAX_CALIBRATION_SAMPLES, MAX_CALIBRATION_SEQ_LEN } from './calibration-types.js';
import { findMethod, METHODS } from './registry.js';
import type { HeldOutSource, InputStats, MatrixReport, PairSource, QuantState, RawOptions } from './types.js';

export type ModuleKind = LinearInfo['module'];

export interface Scope {
  modules: ModuleKind[];
  /** Block indices; undefined = all. */
  layers?: number[];
  /** Glob patterns over weight names (`*` = any run of characters); undefined = all. */
  include?: string[];
  exclude?: string[];
}

export interface RecipeStep {
  method: string;
  options: RawOptions;
  scope: Scope;
  overrides: { pattern: string; options: RawOptions }[];
}

export interface Recipe {
  seed: number;
  calibration?: { file: string; samples: number; seqLen: number };
  /** Explicit token sequences instead of sampled text (calibration: { tokens: file.json, … }). */
  calibrationTokens?: { file: string; batchSize: number; keepPads: boolean; padId?: number };
  steps: RecipeStep[];
}

/**
 * The file each parsed recipe came from, named by errors found when it is applied. Kept beside the
 * recipe rather than in it: a recipe's content hash (the audit's store key) must not depend on its path.
 */
const SOURCES = new WeakMap<Recipe, string>();

function sourceOf(recipe: Recipe): string {
  return SOURCES.get(recipe) ?? 'recipe';
}

export const DEFAULT_SCOPE: Scope = { modules: ['attention', 'ffn'] };

function globToRegExp(glob: string): RegExp {
  return new RegExp('^' + glob.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*') + '$');
}

export function selectTargets(all: readonly LinearInfo[], scope: Scope): LinearInfo[] {
  const inc = scope.include?.map(globToRegExp);
  const exc = scope.exclude?.map(globToRegExp);
  return all.filter(
    (l) =>
      scope.modules.includes(l.module) &&
      (scope.layers === undefined || scope.layers.includes(l.layer)) &&
      (inc === undefined || inc.some((r) => r.test(l.weight))) &&
      !(exc ?? []).some((r) => r.test(l.weight)),
  );
}

// ---- parsing ----------------------------------------------------------------------------------

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parseScope(v: unknown, file: string, where: string): Scope {
  if (v === undefined) return DEFAULT_SCOPE;
  if (!isObject(v)) throw new DikeError(file, `${where} "scope"`, 'expected an object with modules/layers/include/exclude');
  const kinds: ModuleKind[] = ['attention', 'ffn', 'head'];
  const strings = (key: string): string[] | undefined => {
    const x = v[key];
    if (x === undefined) return undefined;
    if (!Array.isArray(x) || x.some((s) => typeof s !== 'string')) throw new DikeError(file, `${where} "scope.${key}"`, 'expected a list of strings');
    return x as string[];
  };
  const modules = strings('modules') ?? DEFAULT_SCOPE.modules;
  for (const m of modules) if (!kinds.includes(m as ModuleKind)) throw new DikeError(file, `${where} "scope.modules"`, `unknown module "${m}" (use ${kinds.join(', ')})`);
  let layers: number[] | undefined;
  if (v['layers'] !== undefined) {
    const x = v['layers'];
    if (!Array.isArray(x) || x.some((n) => !Number.isInteger(n) || (n as number) < 0)) throw new DikeError(file, `${where} "scope.layers"`, 'expected a list of block indices');
    layers = x as number[];
  }
  for (const k of Object.keys(v)) if (!['modules', 'layers', 'include', 'exclude'].includes(k)) throw new DikeError(file, `${where} "scope.${k}"`, 'unknown scope key');
  const s: Scope = { modules: modules as ModuleKind[] };
  if (layers !== undefined) s.layers = layers;
  const include = strings('include');
  const exclude = strings('exclude');
  if (include !== undefined) s.include = include;
  if (exclude !== undefined) s.exclude = exclude;
  return s;
}

export function parseRecipe(text: string, file: string): Recipe {
  let doc: unknown;
  try {
    doc = file.endsWith('.json') ? JSON.parse(text) : YAML.parse(text, { logLevel: 'error' }); // a YAML warning would be a second stderr line
  } catch (e) {
    throw new DikeError(file, '', `malformed recipe: ${(e as Error).message.split('\n')[0]}`);
  }
  if (!isObject(doc)) throw new DikeError(file, '', 'a recipe is an object with "steps"');
  const seed = doc['seed'] ?? 0;
  if (!Number.isInteger(seed) || (seed as number) < 0) throw new DikeError(file, '"seed"', 'expected a non-negative integer');
  const recipe: Recipe = { seed: seed as number, steps: [] };
  SOURCES.set(recipe, file);
  const cal = doc['calibration'];
  if (isObject(cal) && cal['tokens'] !== undefined) {
    // Explicit token ids (a JSON list of id lists), batched as given.
    if (typeof cal['tokens'] !== 'string') throw new DikeError(file, '"calibration.tokens"', 'expected the path of a JSON file of token-id lists');
    for (const k of Object.keys(cal)) if (!['tokens', 'batch_size', 'keep_pads', 'pad_id'].includes(k)) throw new DikeError(file, `"calibration.${k}"`, 'unknown key (with tokens: batch_size, keep_pads, pad_id)');
    const batchSize = cal['batch_size'] ?? 16;
    if (!Number.isInteger(batchSize) || (batchSize as number) <= 0) throw new DikeError(file, '"calibration.batch_size"', 'expected a positive integer');
    const keepPads = cal['keep_pads'] ?? false;
    if (typeof keepPads !== 'boolean') throw new DikeError(file, '"calibration.keep_pads"', 'expected true or false');
    const padId = cal['pad_id'];
    if (padId !== undefined && (!Number.isInteger(padId) || (padId as number) < 0)) throw new DikeError(file, '"calibration.pad_id"', 'expected a token id');
    recipe.calibrationTokens = { file: path.resolve(path.dirname(file), cal['tokens']), batchSize: batchSize as number, keepPads, ...(padId !== undefined ? { padId: padId as number } : {}) };
  } else if (cal !== undefined) {
    if (!isObject(cal) || typeof cal['file'] !== 'string') throw new DikeError(file, '"calibration"', 'expected { file, samples, seq_len } or { tokens, batch_size, keep_pads, pad_id }');
    const samples = cal['samples'] ?? 128;
    const seqLen = cal['seq_len'] ?? 128;
    if (!Number.isInteger(samples) || (samples as number) <= 0 || (samples as number) > MAX_CALIBRATION_SAMPLES) throw new DikeError(file, '"calibration.samples"', `expected an integer from 1 to ${MAX_CALIBRATION_SAMPLES}, got ${JSON.stringify(samples)}`);
    if (!Number.isInteger(seqLen) || (seqLen as number) < 4 || (seqLen as number) > MAX_CALIBRATION_SEQ_LEN) throw new DikeError(file, '"calibration.seq_len"', `expected an integer from 4 to ${MAX_CALIBRATION_SEQ_LEN}, got ${JSON.stringify(seqLen)}`);
    // A relative path is relative to the recipe file.
    recipe.calibration = { file: path.resolve(path.dirname(file), cal['file'] as string), samples: samples as number, seqLen: seqLen as number };
  }
  const steps = doc['steps'];
  if (!Array.isArray(steps) || steps.length === 0) throw new DikeError(file, '"steps"', 'expected a non-empty list of steps');
  steps.forEach((s, i) => {
    const where = `step ${i + 1}`;
    if (!isObject(s) || typeof s['method'] !== 'string') throw new DikeError(file, where, 'each step needs "method"');
    if (findMethod(s['method']) === undefined) throw new DikeError(file, `${where} "method"`, `unknown method "${s['method']}" (available: ${METHODS.map((m) => m.name).join(', ')})`);
    const { method, scope, overrides, ...options } = s;
    const ov: RecipeStep['overrides'] = [];
    if (overrides !== undefined) {
      if (!isObject(overrides)) throw new DikeError(file, `${where} "overrides"`, 'expected { "<weight-name pattern>": { option: value } }');
      for (const [pattern, o] of Object.entries(overrides)) {
        if (!isObject(o)) throw new DikeError(file, `${where} "overrides.${pattern}"`, 'expected an object of options');
        ov.push({ pattern, options: o });
      }
    }
    recipe.steps.push({ method: method as string, options, scope: parseScope(scope, file, where), overrides: ov });
  });
  // Validate every step's options now, before any work.
  recipe.steps.forEach((s, i) => {
    const m = findMethod(s.method)!;
    inRecipeFile(recipe, () => {
      m.parseOptions(s.options, `step ${i + 1}`);
      s.overrides.forEach((o) => m.parseOptions({ ...s.options, ...o.options }, `step ${i + 1} override "${o.pattern}"`));
    });
  });
  return recipe;
}

export function readRecipe(file: string): Recipe {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new DikeError(file, '', (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'recipe not found' : `cannot read: ${(e as Error).message}`);
  }
  return parseRecipe(text, file);
}

// ---- applying ---------------------------------------------------------------------------------

export interface CompressionResult {
  params: Map<string, Param>;
  quantized: Map<string, QuantState>;
  reports: MatrixReport[][];
  calibration?: CalibrationSet;
  /** The edited config.json, when a step changed the architecture (e.g. removed blocks). */
  config?: Record<string, unknown>;
}

/** Copy of the parameters (float32), so the dense checkpoint is never modified. */
function cloneParams(params: Map<string, Param>): Map<string, Param> {
  return new Map([...params].map(([k, p]) => [k, { ...p, shape: [...p.shape], data: p.data.slice() }]));
}

/**
 * Methods name their errors' file "recipe" (they do not know it): name the recipe file instead, and
 * the step when the recipe has only one.
 */
function relabel(recipe: Recipe, e: unknown): unknown {
  if (!(e instanceof DikeError) || (e.file !== 'recipe' && e.file !== '') || !SOURCES.has(recipe)) return e;
  const place = !e.place.startsWith('step ') && recipe.steps.length === 1 ? `step 1 ${e.place}`.trim() : e.place;
  return new DikeError(sourceOf(recipe), place, e.problem);
}

function inRecipeFile<T>(recipe: Recipe, f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw relabel(recipe, e);
  }
}

export interface ApplyOptions {
  threads?: number;
  /** Use this calibration set instead of the recipe's (library callers with their own token ids). */
  calibration?: CalibrationSet;
  /** Sentence pairs for methods calibrated on pairs (fair-gptq); the CLI and audit pass measure/pairs.ts. */
  pairs?: PairSource;
  /** Held-out quality text for methods that hold quality to a budget (fair-gptq quality_budget). */
  heldOut?: HeldOutSource;
  /**
   * Compress the checkpoint's own parameters instead of a copy (default false: the caller's model
   * stays dense). Saves one float32 copy of the weights (418 MiB for BERT-base) where the dense
   * model is not needed afterwards (`dike compress`). The result's `params` is then `ckpt.params`
   * itself, edited in place (matrices overwritten, and entries replaced or removed by steps that
   * change the architecture): `ckpt` holds the compressed model, with its original config.
   */
  inPlace?: boolean;
}

export async function applyRecipe(ckpt: Checkpoint, recipe: Recipe, opts: ApplyOptions = {}): Promise<CompressionResult> {
  try {
    return await applySteps(ckpt, recipe, opts);
  } catch (e) {
    throw relabel(recipe, e);
  }
}

async function applySteps(ckpt: Checkpoint, recipe: Recipe, opts: ApplyOptions): Promise<CompressionResult> {
  const params = opts.inPlace === true ? ckpt.params : cloneParams(ckpt.params);
  // The model as the next step sees it: a step may edit the config (and so the architecture).
  let model: Checkpoint = { ...ckpt, params };
  let allLinears = model.family.linears(model.config, model.task);
  let configEdited = false;
  let calibration: CalibrationSet | undefined = opts.calibration;
  const calibrationSet = (): CalibrationSet => {
    if (calibration !== undefined) return calibration;
    const tok = recipe.calibrationTokens;
    if (tok !== undefined) {
      const padId = tok.padId ?? ckpt.tokenizer.special.pad ?? ckpt.tokenizer.special.eos ?? 0;
      return (calibration = readTokenCalibration(tok.file, { rows: tok.batchSize, keepPads: tok.keepPads, padId }));
    }
    if (recipe.calibration === undefined) throw new DikeError(sourceOf(recipe), '"calibration"', 'a method in this recipe needs calibration text: give --calibration <text file> (or calibration.file in a recipe)');
    const spec: CalibrationSpec = { ...recipe.calibration, seed: recipe.seed };
    return (calibration = sampleCalibration(ckpt, spec));
  };
  if (recipe.steps.some((s) => findMethod(s.method)!.needsCalibration)) calibrationSet();
  const reports: MatrixReport[][] = [];
  const quantized = new Map<string, QuantState>();
  for (const [i, step] of recipe.steps.entries()) {
    const method = findMethod(step.method)!;
    const targets = selectTargets(allLinears, step.scope);
    const layers = new Set(allLinears.map((l) => l.layer).filter((l) => l >= 0));
    const missing = step.scope.layers?.find((l) => !layers.has(l));
    if (missing !== undefined) {
      throw new DikeError(sourceOf(recipe), `step ${i + 1} "scope.layers"`, `layer ${missing} does not exist (the model has layers 0..${Math.max(...layers)})`);
    }
    if (targets.length === 0) throw new DikeError(sourceOf(recipe), `step ${i + 1} "scope"`, 'selects no weight matrix of this model');
    // Group targets by their effective options (base options, then the first matching override).
    // Each group is applied (and, with sequential calibration, walked block by block) on its own, in
    // turn: a later group's statistics see the earlier groups compressed in every block, an earlier
    // group's do not see the later ones (strictly sequential only within one group of options).
    const groups = new Map<string, { options: RawOptions; targets: LinearInfo[] }>();
    for (const t of targets) {
      const o = step.overrides.find((x) => globToRegExp(x.pattern).test(t.weight));
      const options = o ? { ...step.options, ...o.options } : step.options;
      const key = JSON.stringify(options);
      const g = groups.get(key) ?? { options, targets: [] };
      g.targets.push(t);
      groups.set(key, g);
    }
    const stepReports: MatrixReport[] = [];
    const configEdits: Record<string, unknown> = {};
    for (const g of groups.values()) {
      let stats: Map<string, InputStats> | undefined;
      const parsed = method.parseOptions(g.options, `step ${i + 1}`);
      stepReports.push(
        ...(await method.apply(
          {
            params,
            targets: g.targets,
            allLinears,
            shape: model.shape,
            model,
            seed: recipe.seed + i,
            quantized,
            configEdits,
            calibrationSet,
            ...(opts.threads !== undefined ? { threads: opts.threads } : {}),
            calibration: async () => (stats ??= await inputStats(model, params, g.targets, calibrationSet(), opts.threads !== undefined ? { threads: opts.threads } : {})),
            walk: async ({ set, ...walk }, visit) =>
              walkCalibration(model, params, g.targets, set ?? calibrationSet(), { ...walk, ...(opts.threads !== undefined ? { threads: opts.threads } : {}) }, visit),
            pairs: (req, where) => {
              if (opts.pairs === undefined) throw new DikeError('recipe', where, `needs sentence pairs ("${req.source}") but no pair source was given (applyRecipe's pairs option; the CLI passes one)`);
              return opts.pairs({ ...req, ...(recipe.calibration !== undefined && req.textFile === undefined ? { textFile: recipe.calibration.file } : {}) });
            },
            heldOut: (lines, where) => {
              if (opts.heldOut === undefined) throw new DikeError('recipe', where, 'needs held-out quality text but none was given (applyRecipe\'s heldOut option; the CLI passes one)');
              return opts.heldOut(lines);
            },
          },
          parsed,
        )),
      );
    }
    reports.push(stepReports);
    if (Object.keys(configEdits).length > 0) {
      // The architecture changed: re-read the edited config so that later steps see the new model.
      const rawConfig = { ...model.rawConfig, ...configEdits };
      model = { ...model, ...resolveArchitecture(new ConfigReader(rawConfig, model.configFile)), rawConfig };
      allLinears = model.family.linears(model.config, model.task);
      configEdited = true;
      for (const l of allLinears) {
        if (!params.has(l.weight)) throw new DikeError(sourceOf(recipe), `step ${i + 1}`, `after this step the model lacks ${l.weight}`);
      }
    }
  }
  // A later step that rewrites a quantized matrix (e.g. pruning after GPTQ) invalidates its integer form.
  return { params, quantized, reports, ...(calibration ? { calibration } : {}), ...(configEdited ? { config: model.rawConfig } : {}) };
}

// ---- writing ----------------------------------------------------------------------------------


/**
 * Write a Hugging Face directory: same config and tokenizer, every parameter in model.safetensors
 * (sorted by name; changed matrices as F32 so that quantized values are exact, the rest in their
 * original dtype), and compression.json with the recipe and what was applied.
 */
export function writeCompressed(ckpt: Checkpoint, result: CompressionResult, recipe: Recipe, outDir: string): void {
  if (path.resolve(outDir) === path.resolve(ckpt.dir)) throw new DikeError(outDir, '', 'the output directory must differ from the model directory');
  if (existsSync(outDir) && (!statSync(outDir).isDirectory() || readdirSync(outDir).length > 0)) {
    throw new DikeError(outDir, '', 'output directory exists and is not empty');
  }
  mkdirSync(outDir, { recursive: true });
  // Config (edited when layers were removed), generation config and tokenizer as the source has them.
  for (const name of ['config.json', 'generation_config.json']) {
    const src = path.join(ckpt.dir, name);
    if (name === 'config.json' && result.config !== undefined) writeFileSync(path.join(outDir, name), JSON.stringify(result.config, null, 2) + '\n');
    else if (existsSync(src)) writeFileSync(path.join(outDir, name), readFileSync(src));
  }
  copyTokenizerFiles(ckpt.dir, outDir);
  const changed = new Set(result.reports.flat().map((r) => r.weight));
  const tensors: [string, RawTensor][] = [...result.params.keys()].sort().map((name) => {
    const p = result.params.get(name)!;
    const dtype = changed.has(name) || (p.dtype !== 'F16' && p.dtype !== 'BF16') ? 'F32' : p.dtype;
    return [name, fromFloat32(p.data, p.shape, dtype)];
  });
  const bytes = serializeSafetensors(tensors, { format: 'pt' });
  const tmp = path.join(outDir, `model.safetensors.tmp-${process.pid}`);
  writeFileSync(tmp, bytes);
  renameSync(tmp, path.join(outDir, 'model.safetensors'));
  const record = {
    tool: 'dike',
    version: dikeVersion(),
    source: { dir: ckpt.dir, architecture: ckpt.hfClass },
    recipe: {
      seed: recipe.seed,
      ...(recipe.calibration ? { calibration: { ...recipe.calibration, file: path.basename(recipe.calibration.file), file_sha256: sha256File(recipe.calibration.file) } } : {}),
      ...(recipe.calibrationTokens ? { calibration: { ...recipe.calibrationTokens, tokens: path.basename(recipe.calibrationTokens.file), file: undefined } } : {}),
      steps: recipe.steps.map((s, i) => ({
        method: s.method,
        ...findMethod(s.method)!.parseOptions(s.options, `step ${i + 1}`),
        scope: s.scope,
        ...(s.overrides.length ? { overrides: Object.fromEntries(s.overrides.map((o) => [o.pattern, o.options])) } : {}),
      })),
    },
    calibration: result.calibration
      ? {
          sequences: result.calibration.sequences.length,
          ...('seqLen' in result.calibration.spec ? { seq_len: result.calibration.spec.seqLen } : { tokens: path.basename(result.calibration.spec.tokens) }),
          batch_size: result.calibration.batching.rows,
          keep_pads: result.calibration.batching.keepPads,
          token_sha256: result.calibration.hash,
        }
      : null,
    weights_sha256: sha256Bytes(bytes),
    steps: result.reports.map((r, i) => {
      // How the step's statistics were gathered (sequential or one-shot), for the calibrated methods.
      const o = findMethod(recipe.steps[i]!.method)!.parseOptions(recipe.steps[i]!.options, `step ${i + 1}`) as Record<string, unknown>;
      return { step: i + 1, method: recipe.steps[i]!.method, ...(typeof o['calibration'] === 'string' ? { calibration: o['calibration'] } : {}), matrices: r };
    }),
  };
  if (result.quantized.size > 0) {
    // Sidecar with the integer form of quantized matrices (codes, scales, zero points) for deployed kernels.
    const q: [string, RawTensor][] = [];
    for (const name of [...result.quantized.keys()].sort()) {
      const s = result.quantized.get(name)!;
      const groups = Math.ceil(s.cols / s.groupSize);
      q.push([`${name}.codes`, { dtype: 'U8', shape: [s.rows, s.cols], bytes: s.codes }]);
      q.push([`${name}.scales`, fromFloat32(s.scales, [s.rows, groups], 'F32')]);
      q.push([`${name}.zeros`, { dtype: 'U8', shape: [s.rows, groups], bytes: s.zeros }]);
    }
    const meta = Object.fromEntries([...result.quantized].map(([n, s]) => [n, JSON.stringify({ bits: s.bits, group_size: s.groupSize, symmetric: s.symmetric, ...(s.dynamicActivations ? { dynamic_activations: true } : {}) })]));
    writeFileSync(path.join(outDir, 'quantization.safetensors'), serializeSafetensors(q, meta));
  }
  const cj = path.join(outDir, 'compression.json');
  writeFileSync(`${cj}.tmp`, JSON.stringify(record, null, 2) + '\n');
  renameSync(`${cj}.tmp`, cj);
  rmSync(tmp, { force: true });
}
