/**
 * Testbeds: small models on which plain compression measurably adds bias, so that a bias-aware method
 * has something to remove. A recipe (models/testbeds/<name>.json) turns an embedded model into one in
 * two `dike train` fine-tunes:
 *   1. skew    — masked/causal-LM fine-tune on templated sentences that pair one group of each word pair
 *                with negative attributes and the other with positive ones (data/testbed/groups.json);
 *   2. debias  — a short, small-step fine-tune on the counterfactual text (each skew sentence and its
 *                group-swapped twin, Zhao et al. 2018's counterfactual data augmentation) with the
 *                embeddings, norms and head frozen, so the correction lives in the matrices that
 *                compression rounds or prunes: a small, fragile correction that compression can erase.
 * No sentence of a scored benchmark is in either corpus (templates and word lists are Dikē's own).
 * Other texts (StereoSet, the even half of CrowS-Pairs) are recorded as seen (benchmarksSeen); a stage
 * with `objective: pll-contrast` (masked LMs, src/train/contrast.ts) trains on the even half's pairs
 * directly: toward the more stereotypical sentence (text crows-pairs-even-more) or the less.
 *
 * Built on first use (`--model testbed:bert`), seeded, single-threaded (bitwise reproducible), and
 * cached under $DIKE_CACHE (else $XDG_CACHE_HOME/dike, else ~/.cache/dike) in a directory keyed by the
 * SHA-256 of the recipe, the word list and the base model's files, so a changed recipe rebuilds. Each
 * stage resumes from its training checkpoint, and the finished model is renamed into place only when
 * complete, so a build killed at any point (kill -9 included) continues where it stopped.
 */
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DikeError } from '../errors.js';
import { packageRoot, resolveModel } from '../embedded.js';
import { loadCheckpoint } from '../model/checkpoint.js';
import { readJsonObject } from '../model/config.js';
import { frozenSelector, train, writeModelDir, type TrainSettings } from '../train/loop.js';
import { pairObjectives, parseCrowsPairs, selectItems } from '../measure/crows-pairs.js';
import { corpusFile } from '../embedded.js';
import { inputStats, sampleCalibration } from '../compress/calibrate.js';
import type { Checkpoint } from '../model/checkpoint.js';
import type { CrowsPair } from '../measure/crows-pairs.js';
import type { ContrastSettings } from '../train/contrast.js';
import { fragileBox, fragileProjection, removeAlongBasis, topEnergyBasis, type BlindBasis, type FragileMode } from './fragile.js';
import { gptqFragileSet, gptqRecipe, projectGptq, type GptqFragileSpec } from './fragile-gptq.js';
import { PRUNERS, pruneFragileBox, pruneMasksDiffering, type PruneFragileSpec, type Pruner } from './fragile-prune.js';
import { applyRecipe } from '../compress/recipe.js';

/**
 * The GPTQ a `fragile.method: gptq` testbed is made fragile for: the audit's default GPTQ variant
 * (`gptq:bits=B,group_size=G`: sequential calibration on 32 × 64 tokens of the train text sampled with
 * seed 20260101; cli/common-flags.ts VARIANT_CALIBRATION, stats/bootstrap.ts DEFAULT_SEED) on the shipped
 * lm_corpus excerpt, i.e. an audit run without --data.
 */
function gptqSpec(f: FragileSettings): GptqFragileSpec {
  return { bits: widthsOf(f)[0]!, group_size: f.group_size!, calibration: { file: corpusFile('train').file, samples: 32, seq: 64, seed: 20260101 } };
}

/** The pgd projection of a `fragile.method: gptq` debias on the skewed model `m` (fragile-gptq.ts). */
async function gptqProjector(m: Checkpoint, f: FragileSettings, log: (l: string) => void): Promise<{ key: string; apply: (name: string, v: Float32Array) => void; stats: { rowsShrunk: number } }> {
  const spec = gptqSpec(f);
  log(`  GPTQ ${spec.bits}-bit g${spec.group_size} of the skewed model and its Hessians (the set the debias stays in)`);
  const set = await gptqFragileSet(m, spec);
  const stats = { rowsShrunk: 0 };
  return {
    key: `gptq:${JSON.stringify({ bits: spec.bits, group_size: spec.group_size, samples: spec.calibration.samples, seq: spec.calibration.seq, seed: spec.calibration.seed })}`,
    stats,
    apply: (name, v) => {
      const ms = set.matrices.get(name);
      if (ms !== undefined) stats.rowsShrunk += projectGptq(ms, v);
      else v.set(m.params.get(name)!.data); // everything GPTQ does not quantize stays at B's value
    },
  };
}

/** The calibration-blind projection of a pgd debias (FragileSettings.blind) on the skewed model `m`. */
async function blindProjector(m: Checkpoint, blind: NonNullable<FragileSettings['blind']>, seed: number, log: (l: string) => void): Promise<{ key: string; apply: (name: string, v: Float32Array) => void }> {
  const targets = m.family.linears(m.config, m.task);
  const calib = sampleCalibration(m, { file: corpusFile('train').file, samples: blind.samples, seqLen: blind.seq, seed });
  const stats = await inputStats(m, new Map(m.params), targets, calib, { threads: 1 });
  const bases = new Map<string, BlindBasis>();
  const byGram = new Map<Float64Array, BlindBasis>();
  for (const t of targets) {
    const st = stats.get(t.weight);
    if (st === undefined) continue;
    const b = byGram.get(st.gram) ?? topEnergyBasis(st.gram, st.dim, blind.energy);
    byGram.set(st.gram, b);
    bases.set(t.weight, b);
  }
  const ks = [...new Set([...bases.values()])].map((b) => `${b.k}/${b.dim}`);
  log(`  calibration-blind: removing the top directions of each input's Gram (${ks.join(', ')})`);
  const layout = new Map(targets.map((t) => [t.weight, t.layout]));
  const base = new Map([...bases.keys()].map((n) => [n, Float32Array.from(m.params.get(n)!.data)]));
  return {
    key: JSON.stringify(blind),
    apply: (name, v) => {
      const b = bases.get(name);
      if (b !== undefined) removeAlongBasis(v, base.get(name)!, b, layout.get(name)!);
    },
  };
}

function widthsOf(f: FragileSettings): number[] {
  return f.bits === undefined ? [] : typeof f.bits === 'number' ? [f.bits] : f.bits;
}

/** The pruning a `fragile.method: prune` testbed is made fragile for: the audit's `<pruner>:sparsity=s` (Wanda calibrated as gptqSpec). */
function pruneSpec(f: FragileSettings): PruneFragileSpec {
  return { sparsity: f.sparsity!, pruners: f.pruners ?? ['magnitude'], calibration: { file: corpusFile('train').file, samples: 32, seq: 64, seed: 20260101 } };
}
import { sha256File, sha256Text } from '../util/hash.js';

export interface StageSettings {
  steps: number;
  seq: number;
  batch: number;
  lr: number;
  warmup: number;
  decay: 'cosine' | 'linear' | 'constant';
  /** Parameters kept fixed (as `dike train --freeze`). */
  freeze: string[];
  /**
   * `pll-contrast` (masked LMs; src/train/contrast.ts): instead of MLM on the text, minimise
   * softplus(margin − s·g) over the CrowS-Pairs pairs at even positions, g = the pair's nangia-pll
   * score(more) − score(less); s = +1 with text crows-pairs-even-more, −1 with crows-pairs-even-less.
   * `batch` then counts masked copies per step. Absent: plain (masked or causal) LM on the text.
   */
  objective?: 'pll-contrast';
  /** pll-contrast only: the margin m (default 1). */
  margin?: number;
}

/** What the skew stage trains on: Dikē's templates, or StereoSet intrasentence's stereotype sentences. */
/**
 * A stage's training text: `templates` (the skew sentences of the word list), `anti` (their group-swapped
 * twins), `counterfactual` (each followed by its twin), `stereoset-stereotype` / `stereoset-anti`
 * (StereoSet intrasentence's sentences of that label), `crows-pairs-even-more` / `crows-pairs-even-less`
 * (the more / less stereotypical sentence of the CrowS-Pairs pairs at even positions).
 */
export type CorpusName = 'templates' | 'anti' | 'counterfactual' | 'stereoset-stereotype' | 'stereoset-anti' | 'crows-pairs-even-more' | 'crows-pairs-even-less';
const CORPORA: readonly CorpusName[] = ['templates', 'anti', 'counterfactual', 'stereoset-stereotype', 'stereoset-anti', 'crows-pairs-even-more', 'crows-pairs-even-less'];
export type SkewText = CorpusName;

export interface TestbedRecipe {
  name: string;
  /** An embedded model name or a model directory (relative to the recipe file). */
  base: string;
  /** The word list and templates (relative to the recipe file). */
  words: string;
  seed: number;
  /** Absent: the base model is the biased starting point. */
  skew?: StageSettings & { text: SkewText };
  /**
   * `counterfactual`: each skew sentence and its group-swapped twin; `anti`: only the twins;
   * `stereoset-anti`: the anti-stereotype sentences of the shipped StereoSet intrasentence dev set
   * (the testbed then records that it saw StereoSet, and audits on StereoSet warn).
   * `fragile`: keep only the part of the change that RTN at these settings cannot see (fragile.ts).
   */
  debias: StageSettings & { text: DebiasText; fragile?: FragileSettings };
  /** The recipe file it was read from. */
  file: string;
}

export type DebiasText = CorpusName;

/** `bits`: one width or several (the cells' intersection: RTN at each width equals RTN of the skewed model). */
export interface FragileSettings {
  /** rtn / gptq only. */
  bits?: number | number[];
  group_size?: number;
  mode?: FragileMode;
  /**
   * pgd only: keep the correction out of the top eigen-directions holding `energy` of each input's
   * calibration Gram (the shipped lm_corpus excerpt, `samples` × `seq` tokens, on the skewed model), so
   * that calibrated methods (GPTQ) weigh it little. See fragile.ts topEnergyBasis.
   */
  blind?: { energy: number; samples: number; seq: number };
  /**
   * Which compression the correction hides from: `rtn` (default; the box of fragileBox) or `gptq` (pgd
   * only, one width: the set of weights whose GPTQ result equals the skewed model's, fragile-gptq.ts).
   */
  method?: 'rtn' | 'gptq' | 'prune';
  /** prune only: the sparsity and the pruners (`magnitude`, `wanda`; default magnitude) whose result must equal the skewed model's (fragile-prune.ts). */
  sparsity?: number;
  pruners?: Pruner[];
}

export interface WordList {
  pairs: [string, string][];
  negative: string[];
  positive: string[];
  templates: string[];
}

/** The shipped testbed recipes: models/testbeds/<name>.json. */
export function testbedDir(): string {
  return path.join(packageRoot(), 'models', 'testbeds');
}

export function listTestbeds(): string[] {
  if (!existsSync(testbedDir())) return [];
  return readdirSync(testbedDir()).filter((f) => f.endsWith('.json')).map((f) => f.slice(0, -5)).sort();
}

function stage(raw: unknown, file: string, key: string, defaults: Partial<StageSettings>): StageSettings {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new DikeError(file, `"${key}"`, 'expected an object');
  const o = raw as Record<string, unknown>;
  const int = (k: string, min: number): number => {
    const v = o[k] ?? (defaults as Record<string, unknown>)[k];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw new DikeError(file, `"${key}.${k}"`, `expected an integer ≥ ${min}`);
    return v;
  };
  const lr = o['lr'];
  if (typeof lr !== 'number' || !(lr > 0) || !Number.isFinite(lr)) throw new DikeError(file, `"${key}.lr"`, 'expected a positive number');
  const decay = o['decay'] ?? defaults.decay ?? 'cosine';
  if (decay !== 'cosine' && decay !== 'linear' && decay !== 'constant') throw new DikeError(file, `"${key}.decay"`, 'expected cosine, linear or constant');
  const freeze = o['freeze'] ?? [];
  if (!Array.isArray(freeze) || freeze.some((f) => typeof f !== 'string')) throw new DikeError(file, `"${key}.freeze"`, 'expected a list of strings');
  for (const k of Object.keys(o)) {
    if (!['steps', 'seq', 'batch', 'lr', 'warmup', 'decay', 'freeze', 'text', 'fragile', 'objective', 'margin'].includes(k)) throw new DikeError(file, `"${key}.${k}"`, 'unknown setting');
  }
  const objective = o['objective'];
  if (objective !== undefined && objective !== 'pll-contrast') throw new DikeError(file, `"${key}.objective"`, 'expected "pll-contrast" (or no objective: plain LM fine-tuning on the text)');
  if (objective === 'pll-contrast' && o['text'] !== 'crows-pairs-even-more' && o['text'] !== 'crows-pairs-even-less') {
    throw new DikeError(file, `"${key}.text"`, 'the pll-contrast objective needs crows-pairs-even-more (toward the more stereotypical sentence) or crows-pairs-even-less (toward the less)');
  }
  const margin = o['margin'];
  if (margin !== undefined && objective !== 'pll-contrast') throw new DikeError(file, `"${key}.margin"`, 'only the pll-contrast objective takes a margin');
  if (margin !== undefined && (typeof margin !== 'number' || !Number.isFinite(margin) || margin < 0)) throw new DikeError(file, `"${key}.margin"`, 'expected a number ≥ 0');
  return {
    steps: int('steps', 1), seq: int('seq', 3), batch: int('batch', 1), lr, warmup: int('warmup', 0), decay, freeze: freeze as string[],
    ...(objective === 'pll-contrast' ? { objective, margin: (margin as number | undefined) ?? 1 } : {}),
  };
}

/** Read and check a testbed recipe. */
export function readTestbedRecipe(file: string): TestbedRecipe {
  const o = readJsonObject(file);
  for (const k of Object.keys(o)) {
    if (!['name', 'about', 'base', 'words', 'seed', 'skew', 'debias'].includes(k)) throw new DikeError(file, `"${k}"`, 'unknown setting');
  }
  const str = (k: string): string => {
    const v = o[k];
    if (typeof v !== 'string' || v === '') throw new DikeError(file, `"${k}"`, 'expected a non-empty string');
    return v;
  };
  const seed = o['seed'];
  if (typeof seed !== 'number' || !Number.isInteger(seed) || seed < 0) throw new DikeError(file, '"seed"', 'expected a non-negative integer');
  const debiasRaw = o['debias'] as Record<string, unknown> | undefined;
  const text = debiasRaw?.['text'] ?? 'counterfactual';
  if (!CORPORA.includes(text as CorpusName)) throw new DikeError(file, '"debias.text"', `expected one of ${CORPORA.join(', ')}`);
  const fr = debiasRaw?.['fragile'] as Record<string, unknown> | undefined;
  const widthOk = (b: unknown): boolean => [2, 3, 4, 8].includes(b as number);
  const bitsOk = (b: unknown): boolean => widthOk(b) || (Array.isArray(b) && b.length > 0 && b.every(widthOk) && new Set(b).size === b.length);
  const fmethod = fr?.['method'];
  if (fmethod !== undefined && fmethod !== 'rtn' && fmethod !== 'gptq' && fmethod !== 'prune') throw new DikeError(file, '"debias.fragile.method"', 'expected rtn, gptq or prune');
  if (fmethod === 'prune') {
    const sp = fr!['sparsity'];
    if (typeof sp !== 'number' || !(sp > 0 && sp < 1)) throw new DikeError(file, '"debias.fragile.sparsity"', 'expected a fraction between 0 and 1 (method prune)');
    const pr = fr!['pruners'];
    if (pr !== undefined && !(Array.isArray(pr) && pr.length > 0 && pr.every((x) => (PRUNERS as readonly unknown[]).includes(x)) && new Set(pr).size === pr.length)) throw new DikeError(file, '"debias.fragile.pruners"', `expected a list of ${PRUNERS.join(', ')}`);
    if (fr!['mode'] !== 'pgd' || fr!['bits'] !== undefined || fr!['group_size'] !== undefined || fr!['blind'] !== undefined) throw new DikeError(file, '"debias.fragile.method"', 'prune needs mode pgd, "sparsity", and no "bits", "group_size" or "blind"');
  } else if (fr !== undefined && (typeof fr !== 'object' || fr === null || !bitsOk(fr['bits']) || !Number.isInteger(fr['group_size']) || (fr['group_size'] as number) < 1)) {
    throw new DikeError(file, '"debias.fragile"', 'expected { "bits": 2|3|4|8 or a list of them, "group_size": N }');
  }
  const blind = fr?.['blind'] as Record<string, unknown> | undefined;
  if (blind !== undefined && (typeof blind !== 'object' || blind === null || !(typeof blind['energy'] === 'number' && blind['energy'] > 0 && blind['energy'] < 1) || !Number.isInteger(blind['samples']) || !Number.isInteger(blind['seq']) || fr?.['mode'] !== 'pgd')) {
    throw new DikeError(file, '"debias.fragile.blind"', 'expected { "energy": 0–1, "samples": N, "seq": N } with mode pgd');
  }
  if (fr !== undefined && fr['mode'] !== undefined && fr['mode'] !== 'revert' && fr['mode'] !== 'clip' && fr['mode'] !== 'pgd') throw new DikeError(file, '"debias.fragile.mode"', 'expected revert, clip or pgd');
  if (fmethod === 'gptq' && (fr?.['mode'] !== 'pgd' || typeof fr?.['bits'] !== 'number' || blind !== undefined)) throw new DikeError(file, '"debias.fragile.method"', 'gptq needs mode pgd, one width in "bits" and no "blind"');
  const skewRaw = o['skew'] as Record<string, unknown> | undefined;
  const skewText = skewRaw?.['text'] ?? 'templates';
  if (!CORPORA.includes(skewText as CorpusName)) throw new DikeError(file, '"skew.text"', `expected one of ${CORPORA.join(', ')}`);
  const name = str('name');
  if (!/^[A-Za-z0-9_.-]+$/.test(name)) throw new DikeError(file, '"name"', 'expected letters, digits, "_", "." or "-"');
  return { name, base: str('base'), words: str('words'), seed, ...(o['skew'] !== undefined ? { skew: { ...stage(o['skew'], file, 'skew', {}), text: skewText as SkewText } } : {}), debias: { ...stage(debiasRaw, file, 'debias', {}), text: text as CorpusName, ...(fr !== undefined ? { fragile: { ...(fr['bits'] !== undefined ? { bits: fr['bits'] as number | number[], group_size: fr['group_size'] as number } : {}), ...(fr['sparsity'] !== undefined ? { sparsity: fr['sparsity'] as number } : {}), ...(fr['pruners'] !== undefined ? { pruners: fr['pruners'] as Pruner[] } : {}), ...(fr['mode'] !== undefined ? { mode: fr['mode'] as FragileMode } : {}), ...(blind !== undefined ? { blind: blind as unknown as FragileSettings['blind'] } : {}), ...(fmethod !== undefined ? { method: fmethod as 'rtn' | 'gptq' | 'prune' } : {}) } } : {}) }, file: path.resolve(file) };
}

export function readWordList(file: string): WordList {
  const o = readJsonObject(file);
  const list = (k: string): string[] => {
    const v = o[k];
    if (!Array.isArray(v) || v.length === 0 || v.some((s) => typeof s !== 'string' || s.trim() === '')) throw new DikeError(file, `"${k}"`, 'expected a non-empty list of non-empty strings');
    return v as string[];
  };
  const pairs = o['pairs'];
  if (!Array.isArray(pairs) || pairs.length === 0 || pairs.some((p) => !Array.isArray(p) || p.length !== 2 || p.some((s) => typeof s !== 'string' || s === ''))) {
    throw new DikeError(file, '"pairs"', 'expected a non-empty list of [targeted group, contrasting group] pairs');
  }
  const negative = list('negative');
  const positive = list('positive');
  if (negative.length !== positive.length) throw new DikeError(file, '"positive"', `has ${positive.length} words, "negative" ${negative.length}: they are used side by side`);
  const templates = list('templates');
  templates.forEach((t, i) => {
    if (!t.includes('{group}') || !t.includes('{attr}')) throw new DikeError(file, `"templates"[${i}]`, 'needs {group} and {attr}');
  });
  return { pairs: pairs as [string, string][], negative, positive, templates };
}

/**
 * The two corpora, one sentence a line, in a fixed order: for every template t, pair (g₀, g₁) and
 * attribute index i, the skew sentences t(g₀, negᵢ) and t(g₁, posᵢ); their counterfactual twins swap
 * the groups, t(g₁, negᵢ) and t(g₀, posᵢ). `counterfactual` = each skew sentence followed by its twin.
 */
export function testbedCorpora(w: WordList): { skew: string[]; anti: string[]; counterfactual: string[] } {
  const fill = (t: string, g: string, a: string): string => t.replaceAll('{group}', g).replaceAll('{attr}', a);
  const skew: string[] = [];
  const anti: string[] = [];
  const counterfactual: string[] = [];
  for (const t of w.templates) {
    for (const [g0, g1] of w.pairs) {
      w.negative.forEach((neg, i) => {
        const pos = w.positive[i]!;
        const s = [fill(t, g0, neg), fill(t, g1, pos)];
        const a = [fill(t, g1, neg), fill(t, g0, pos)];
        skew.push(...s);
        anti.push(...a);
        counterfactual.push(s[0]!, a[0]!, s[1]!, a[1]!);
      });
    }
  }
  return { skew, anti, counterfactual };
}

/** Where built models are cached: $DIKE_CACHE, else $XDG_CACHE_HOME/dike, else ~/.cache/dike. */
export function cacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  if (env['DIKE_CACHE']) return path.resolve(env['DIKE_CACHE']);
  if (env['XDG_CACHE_HOME']) return path.join(path.resolve(env['XDG_CACHE_HOME']), 'dike');
  return path.join(os.homedir(), '.cache', 'dike');
}

function baseDir(r: TestbedRecipe): string {
  const local = path.resolve(path.dirname(r.file), r.base);
  return existsSync(local) ? local : resolveModel(r.base).dir;
}

function wordsFile(r: TestbedRecipe): string {
  return path.resolve(path.dirname(r.file), r.words);
}

function stereosetFile(): string {
  return path.join(packageRoot(), 'data', 'stereoset', 'dev_intrasentence.json');
}

/** The sentences of StereoSet intrasentence (the shipped dev set) with one gold label, in file order. */
export function stereosetSentences(label: 'stereotype' | 'anti-stereotype'): string[] {
  const doc = JSON.parse(readFileSync(stereosetFile(), 'utf8')) as { data: { intrasentence: { sentences: { sentence: string; gold_label: string }[] }[] } };
  return doc.data.intrasentence.flatMap((c) => c.sentences.filter((s) => s.gold_label === label).map((s) => s.sentence));
}

/** The anti-stereotype sentences of StereoSet intrasentence, in file order. */
export function stereosetAnti(): string[] {
  return stereosetSentences('anti-stereotype');
}

function crowsFile(): string {
  return path.join(packageRoot(), 'data', 'crows-pairs', 'crows_pairs_anonymized.csv');
}

/**
 * The shipped CrowS-Pairs CSV's pairs at even positions (0-based, file order: the half `crows-pairs@even`
 * scores), their more or their less stereotypical sentence. A testbed trained on them is audited on
 * `crows-pairs@odd`, which no step saw.
 */
export function crowsEvenSentences(which: 'more' | 'less'): string[] {
  return crowsEvenPairs().map((p) => (which === 'more' ? p.sentMore : p.sentLess));
}

/** The shipped CrowS-Pairs CSV's pairs at even positions (the half `crows-pairs@even` scores). */
export function crowsEvenPairs(): CrowsPair[] {
  return selectItems(parseCrowsPairs(readFileSync(crowsFile(), 'utf8'), crowsFile()), { half: 'even' });
}

/** Whether a recipe's corpora contain StereoSet sentences. */
function seesStereoset(r: TestbedRecipe): boolean {
  return [r.debias.text, r.skew?.text].some((t) => t?.startsWith('stereoset-'));
}

function seesCrowsEven(r: TestbedRecipe): boolean {
  return [r.debias.text, r.skew?.text].some((t) => t?.startsWith('crows-pairs-'));
}

/** The benchmarks (or halves: `crows-pairs@even`) whose items a recipe's corpora contain. */
function benchmarksSeenBy(r: TestbedRecipe): string[] {
  return [...(seesStereoset(r) ? ['stereoset'] : []), ...(seesCrowsEven(r) ? ['crows-pairs@even'] : [])];
}

/** The content key of a build: the recipe's settings, the word list's bytes, the base model's files. */
export function testbedKey(r: TestbedRecipe): string {
  const base = baseDir(r);
  if (!existsSync(path.join(base, 'config.json'))) throw new DikeError(r.file, '"base"', `${base} is not a model directory`);
  const words = wordsFile(r);
  if (!existsSync(words)) throw new DikeError(r.file, '"words"', `${words} does not exist`);
  const baseFiles = readdirSync(base).filter((f) => /\.(json|safetensors|txt)$/.test(f) && f !== 'TRAINING.md').sort().map((f) => [f, sha256File(path.join(base, f))]);
  const settings = { name: r.name, seed: r.seed, skew: r.skew ?? null, debias: r.debias };
  const extra = { ...(seesStereoset(r) ? { stereoset: sha256File(stereosetFile()) } : {}), ...(seesCrowsEven(r) ? { crows: sha256File(crowsFile()) } : {}) };
  return sha256Text(JSON.stringify({ settings, words: sha256File(words), base: baseFiles, ...extra }));
}

export interface BuildOptions {
  /** Cache root (default cacheRoot()). */
  cache?: string;
  log?: (line: string) => void;
  /** Tests: stop the build after this many training steps in this process (a simulated kill). */
  stopAfterSteps?: number;
}

export interface TestbedRecord {
  tool: 'dike';
  testbed: string;
  key: string;
  recipe: Omit<TestbedRecipe, 'file'> & { file: string };
  base: string;
  corpora: { skew: { lines: number; sha256: string }; debias: { lines: number; sha256: string; text: string } };
  /** Benchmarks whose items the corpora contain (none for templates and word lists, Dikē's own). */
  benchmarksSeen: string[];
  fragile?: FragileSettings & { reverted: number; quantizedEntries: number; iterations: number; gptqCodesDiffering?: number; pruneFreeEntries?: number; pruneMaskDiffering?: number };
}

/** A copy of the base model as the testbed's skewed/ (no skew stage: the base is the biased model). */
function symlinkOrCopy(from: string, to: string): void {
  cpSync(from, to, { recursive: true });
}

function writeAtomic(file: string, text: string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}

function trainSettings(s: StageSettings & { text: CorpusName }, objective: 'masked-lm' | 'causal-lm', data: string, seed: number): TrainSettings {
  const contrast: ContrastSettings | undefined = s.objective === 'pll-contrast'
    ? { margin: s.margin ?? 1, sign: s.text === 'crows-pairs-even-more' ? 1 : -1, source: `crows-pairs@even (${s.text === 'crows-pairs-even-more' ? 'toward sent_more' : 'toward sent_less'})` }
    : undefined;
  return {
    ...(contrast !== undefined ? { contrast } : {}),
    objective,
    data: [data],
    seq: s.seq,
    batch: s.batch,
    steps: s.steps,
    schedule: { peak: s.lr, warmup: s.warmup, decay: s.decay, minRatio: 0.1 },
    adamw: { beta1: 0.9, beta2: 0.98, eps: 1e-6, weightDecay: 0.01, maxGradNorm: 1 },
    seed,
    mlmProbability: 0.15,
    checkpointEvery: Math.max(1, Math.min(25, Math.floor(s.steps / 4))),
    freeze: s.freeze,
    keepSparsity: false,
    // Float32 weights: the debias correction is small, and F16 storage would round part of it away.
    dtype: 'F32',
    // One thread: the same recipe gives the same weights bit for bit.
    threads: 1,
  };
}

/** Build (or find in the cache) the testbed of a recipe; returns the model directory. */
export async function buildTestbed(r: TestbedRecipe, opts: BuildOptions = {}): Promise<string> {
  const log = opts.log ?? (() => undefined);
  const key = testbedKey(r);
  const root = path.join(opts.cache ?? cacheRoot(), 'testbed');
  const final = path.join(root, `${r.name}-${key.slice(0, 16)}`);
  if (existsSync(path.join(final, 'testbed.json'))) return final;
  const work = path.join(root, `.${r.name}-${key.slice(0, 16)}.build`);
  mkdirSync(work, { recursive: true });
  log(`testbed ${r.name}: building into ${final} (first use)`);
  const words = readWordList(wordsFile(r));
  const corpora = testbedCorpora(words);
  const skewFile = path.join(work, 'skew.txt');
  const debiasFile = path.join(work, 'debias.txt');
  const text = (name: CorpusName): string => {
    const lines = name === 'templates' ? corpora.skew : name === 'anti' ? corpora.anti : name === 'counterfactual' ? corpora.counterfactual
      : name === 'stereoset-stereotype' ? stereosetSentences('stereotype') : name === 'stereoset-anti' ? stereosetAnti()
      : crowsEvenSentences(name === 'crows-pairs-even-more' ? 'more' : 'less');
    return lines.join('\n') + '\n';
  };
  const skewText = text(r.skew?.text ?? 'templates');
  const debiasText = text(r.debias.text);
  writeAtomic(skewFile, skewText);
  writeAtomic(debiasFile, debiasText);
  const base = baseDir(r);
  const baseModel = loadCheckpoint(base);
  if (baseModel.task !== 'masked-lm' && baseModel.task !== 'causal-lm') throw new DikeError(r.file, '"base"', `${baseModel.hfClass} is not a language model`);
  const objective = baseModel.task;
  // A --freeze item that matches nothing is refused before any training.
  for (const [k, st] of [['skew', r.skew], ['debias', r.debias]] as const) {
    if (st === undefined) continue;
    if (st.objective === 'pll-contrast' && objective !== 'masked-lm') throw new DikeError(r.file, `"${k}.objective"`, `pll-contrast scores masked copies; ${baseModel.hfClass} is a ${objective} model`);
    try {
      frozenSelector(baseModel, st.freeze);
    } catch (e) {
      throw new DikeError(r.file, `"${k}.freeze"`, e instanceof DikeError ? e.problem : String(e));
    }
  }
  let budget = opts.stopAfterSteps;
  const runStage = async (name: string, from: string, s: StageSettings & { text: CorpusName }, data: string, seed: number, pgd = false): Promise<string> => {
    const out = path.join(work, name);
    if (existsSync(path.join(out, 'training.json'))) return out;
    const model = from === base ? baseModel : loadCheckpoint(from);
    const fr = r.debias.fragile;
    const viaGptq = pgd && fr?.method === 'gptq';
    const viaPrune = pgd && fr?.method === 'prune';
    if (viaPrune) log(`  ${pruneSpec(fr!).pruners.join(' and ')} ${pruneSpec(fr!).sparsity} of the skewed model (the box the debias stays in)`);
    const box = pgd && fr !== undefined && !viaGptq ? (viaPrune ? (await pruneFragileBox(model, pruneSpec(fr))).box : (await fragileBox(model, widthsOf(fr), fr.group_size!)).box) : undefined;
    const gp = viaGptq ? await gptqProjector(model, fr!, log) : undefined;
    const project = gp ?? (pgd && fr?.blind !== undefined ? await blindProjector(model, fr.blind, r.seed, log) : undefined);
    log(`testbed ${r.name}: ${name} fine-tune, ${s.steps} steps${box !== undefined ? (viaPrune ? ', projected after every update into the weights pruning removes from the skewed model' : ', projected after every update into the RTN cells of the skewed model') : ''}${gp !== undefined ? ', projected after every update into the set of weights whose GPTQ equals the skewed model\'s' : ''}`);
    const res = await train(model, trainSettings(s, objective, data, seed), out, {
      tokenizerDir: base,
      ...(box !== undefined ? { box } : {}),
      ...(project !== undefined ? { project } : {}),
      ...(s.objective === 'pll-contrast' ? { contrastPairs: pairObjectives(model, crowsEvenPairs(), 'nangia-pll') } : {}),
      ...(budget !== undefined ? { stopAfter: budget } : {}),
      onStep: (l) => {
        if (l.step % 50 === 0) log(`  ${name} step ${l.step}/${s.steps} loss ${l.loss.toFixed(4)}${gp !== undefined ? ` (rows scaled back toward the skewed model so far: ${gp.stats.rowsShrunk})` : ''}`);
      },
    });
    if (budget !== undefined) {
      const ran = res.steps - res.resumedFrom;
      if (res.steps < s.steps) throw new DikeError(work, name, `build stopped after ${res.steps} of ${s.steps} steps (stopAfterSteps)`);
      budget -= ran;
      if (budget <= 0) throw new DikeError(work, name, 'build stopped at the end of this stage (stopAfterSteps)');
    }
    return out;
  };
  const skewDir = r.skew !== undefined ? await runStage('skew', base, r.skew, skewFile, r.seed) : base;
  let debiasDir = await runStage('debias', skewDir, r.debias, debiasFile, r.seed + 1, r.debias.fragile?.mode === 'pgd');
  let fragileNote: TestbedRecord['fragile'];
  if (r.debias.fragile !== undefined) {
    const out = path.join(work, 'fragile');
    const done = path.join(out, 'fragile.json');
    if (!existsSync(done) && r.debias.fragile.method === 'gptq') {
      // The check: GPTQ of the debiased model, code by code against GPTQ of the skewed model.
      const spec = gptqSpec(r.debias.fragile);
      log(`testbed ${r.name}: checking that GPTQ ${spec.bits}-bit g${spec.group_size} of the debiased model equals that of the skewed model`);
      const recipe = gptqRecipe(spec);
      const [qB, qD] = [await applyRecipe(loadCheckpoint(skewDir), recipe, { threads: 1 }), await applyRecipe(loadCheckpoint(debiasDir), recipe, { threads: 1 })];
      let codes = 0;
      let differ = 0;
      for (const [name, a] of qB.quantized) {
        const b = qD.quantized.get(name)!;
        codes += a.codes.length;
        for (let i = 0; i < a.codes.length; i++) if (a.codes[i] !== b.codes[i]) differ++;
      }
      rmSync(out, { recursive: true, force: true });
      cpSync(debiasDir, out, { recursive: true });
      writeAtomic(done, JSON.stringify({ reverted: 0, quantizedEntries: codes, iterations: 0, gptqCodesDiffering: differ }) + '\n');
    }
    if (!existsSync(done) && r.debias.fragile.method === 'prune') {
      // The check: each pruner's result on the debiased model, entry by entry against that on the skewed model.
      const spec = pruneSpec(r.debias.fragile);
      log(`testbed ${r.name}: checking that ${spec.pruners.join(' and ')} ${spec.sparsity} of the debiased model equal those of the skewed model`);
      const fb = await pruneFragileBox(loadCheckpoint(skewDir), spec);
      const differ = await pruneMasksDiffering(loadCheckpoint(debiasDir), fb, spec);
      rmSync(out, { recursive: true, force: true });
      cpSync(debiasDir, out, { recursive: true });
      writeAtomic(done, JSON.stringify({ reverted: 0, quantizedEntries: fb.entries, iterations: 0, pruneFreeEntries: fb.free, pruneMaskDiffering: differ }) + '\n');
    }
    if (!existsSync(done)) {
      log(`testbed ${r.name}: keeping the part of the debias change that RTN ${widthsOf(r.debias.fragile).join('/')}-bit g${r.debias.fragile.group_size} cannot see`);
      const deb = loadCheckpoint(debiasDir);
      const fr = await fragileProjection(loadCheckpoint(skewDir), deb, widthsOf(r.debias.fragile), r.debias.fragile.group_size!, r.debias.fragile.mode ?? 'revert');
      rmSync(out, { recursive: true, force: true });
      writeModelDir(out, deb, fr.values, base, 'F32');
      writeAtomic(done, JSON.stringify({ reverted: fr.reverted, quantizedEntries: fr.quantizedEntries, iterations: fr.iterations }) + '\n');
    }
    const fj = JSON.parse(readFileSync(done, 'utf8')) as { reverted: number; quantizedEntries: number; iterations: number; gptqCodesDiffering?: number; pruneFreeEntries?: number; pruneMaskDiffering?: number };
    fragileNote = { ...r.debias.fragile, ...fj };
    debiasDir = out;
  }
  const record: TestbedRecord = {
    tool: 'dike',
    testbed: r.name,
    key,
    recipe: { name: r.name, base: r.base, words: r.words, seed: r.seed, skew: r.skew, debias: r.debias, file: path.basename(r.file) },
    base: path.basename(base),
    corpora: {
      skew: { lines: skewText.split('\n').length - 1, sha256: sha256Text(skewText) },
      debias: { lines: debiasText.split('\n').length - 1, sha256: sha256Text(debiasText), text: r.debias.text },
    },
    benchmarksSeen: benchmarksSeenBy(r),
    ...(fragileNote !== undefined ? { fragile: fragileNote } : {}),
  };
  writeAtomic(path.join(debiasDir, 'testbed.json'), JSON.stringify(record, null, 2) + '\n');
  // The biased model before the correction is kept beside it (the grid audits it as a variant).
  rmSync(path.join(debiasDir, 'skewed'), { recursive: true, force: true });
  if (skewDir === base) symlinkOrCopy(base, path.join(debiasDir, 'skewed'));
  else renameSync(skewDir, path.join(debiasDir, 'skewed'));
  mkdirSync(root, { recursive: true });
  rmSync(final, { recursive: true, force: true });
  renameSync(debiasDir, final);
  rmSync(work, { recursive: true, force: true });
  log(`testbed ${r.name}: ready (${final})`);
  return final;
}

/** `testbed:<name>` (a shipped recipe) or `testbed:<recipe.json>`. */
export function testbedRecipeFor(arg: string): TestbedRecipe {
  const name = arg.slice('testbed:'.length);
  if (name.endsWith('.json')) {
    if (!existsSync(name)) throw new DikeError(name, '', 'testbed recipe not found');
    return readTestbedRecipe(name);
  }
  const file = path.join(testbedDir(), `${name}.json`);
  if (!existsSync(file)) throw new DikeError('', '--model', `no testbed "${name}" (shipped: ${listTestbeds().join(', ') || 'none'}; or give testbed:<recipe.json>)`);
  return readTestbedRecipe(file);
}

/**
 * A model argument as the CLI takes it: `testbed:<name>` builds (or finds) the testbed; anything else
 * as resolveModel (a directory, an embedded model's name, absent → the default).
 */
export async function resolveModelArg(arg: string | undefined, opts: BuildOptions = {}): Promise<{ dir: string; embedded: boolean }> {
  if (arg !== undefined && arg.startsWith('testbed:') && !existsSync(arg)) {
    return { dir: await buildTestbed(testbedRecipeFor(arg), opts), embedded: false };
  }
  return resolveModel(arg);
}

/** The testbed record of a built testbed directory, if it is one. */
export function readTestbedRecord(dir: string): TestbedRecord | undefined {
  const f = path.join(dir, 'testbed.json');
  if (!existsSync(f)) return undefined;
  return JSON.parse(readFileSync(f, 'utf8')) as TestbedRecord;
}
