/**
 * `dike train` and `dike distill`: flags (or a JSON recipe with the same keys) → TrainSettings → train().
 */
import { resolveModelArg } from '../testbed/testbed.js';
import * as path from 'node:path';
import { DikeError } from '../errors.js';
import { loadCheckpoint } from '../model/checkpoint.js';
import { readJsonObject } from '../model/config.js';
import { initFromConfig, parseStudent, studentFromLayers, type TrainableModel } from '../train/init.js';
import { frozenSelector, train, type StepLog, type TrainSettings } from '../train/loop.js';
import type { DistillTerms } from '../train/step.js';
import type { TextPair } from '../train/counterfactual.js';
import { resolveDataDir } from '../measure/data.js';
import { sentencePairs } from '../measure/pairs.js';
import type { Objective } from '../train/corpus.js';
import { convertValue, parseFlags, type CommandSpec, type FlagSpec, type FlagValue, type Parsed } from './flags.js';
import { SEED_FLAG, THREADS_FLAG } from './common-flags.js';

/** The flags of train and distill; a --recipe JSON may give any of them under the same names. */
const TRAIN_FLAGS: Record<string, FlagSpec> = {
  data: { type: 'string', value: '<text-file>[,<text-file>…]', help: 'training text (or JSONL/TSV for classification); required here or in the recipe' },
  out: { type: 'string', value: '<dir>', help: 'output directory (resumes from its checkpoint); required here or in the recipe' },
  recipe: { type: 'string', value: 'recipe.json', help: 'settings as JSON with these flag names as keys (flags override it)' },
  objective: { type: 'enum', choices: ['masked-lm', 'causal-lm', 'sequence-classification'], help: "training objective (default: the model's task)" },
  seq: { type: 'int', min: 3, max: 65536, default: 128, help: 'sequence length in tokens' },
  batch: { type: 'int', min: 1, max: 65536, default: 32, help: 'sequences per step' },
  steps: { type: 'int', min: 1, max: 100_000_000, default: 500, help: 'optimizer steps' },
  lr: { type: 'number', min: 0, exclusiveMin: true, default: 5e-4, help: 'peak learning rate' },
  warmup: { type: 'int', min: 0, default: 50, help: 'linear warm-up steps' },
  decay: { type: 'enum', choices: ['cosine', 'linear', 'constant'], default: 'cosine', help: 'learning-rate decay after warm-up' },
  'min-lr-ratio': { type: 'number', min: 0, max: 1, default: 0.1, help: 'final learning rate ÷ peak' },
  beta1: { type: 'number', min: 0, max: 1, exclusiveMax: true, default: 0.9, help: 'AdamW β₁' },
  beta2: { type: 'number', min: 0, max: 1, exclusiveMax: true, default: 0.98, help: 'AdamW β₂' },
  eps: { type: 'number', min: 0, exclusiveMin: true, default: 1e-6, help: 'AdamW ε' },
  'weight-decay': { type: 'number', min: 0, default: 0.01, help: 'AdamW decoupled weight decay' },
  clip: { type: 'string', value: 'N|none', default: '1.0', help: 'clip the global gradient norm to N (a positive number), or none' },
  seed: { ...SEED_FLAG, default: 0 },
  'mlm-probability': { type: 'number', min: 0, max: 1, exclusiveMin: true, exclusiveMax: true, default: 0.15, help: 'masked-LM: fraction of tokens masked' },
  'checkpoint-every': { type: 'int', min: 0, default: 50, help: 'steps between checkpoints (0: none)' },
  freeze: { type: 'list', value: 'embeddings|attention|ffn|head|norms|layer.N|name-prefix,…', help: 'keep these parameters fixed; each item must match a parameter' },
  'keep-sparsity': { type: 'boolean', help: 'keep the zeros of pruned matrices at zero' },
  'cf-pairs': { type: 'string', value: 'stereoset|crows-pairs|<pairs.json>', help: 'causal LM: add the counterfactual gap penalty on these sentence pairs (fair distillation / repair)' },
  'cf-pairs-limit': { type: 'int', min: 1, help: 'use the first N pairs' },
  'cf-per-step': { type: 'int', min: 1, default: 4, help: 'pairs appended to each batch' },
  'cf-weight': { type: 'number', min: 0, default: 1, help: 'β of (β/P) Σ max(0, g² − t²): g the model\'s gap log P(stereotype) − log P(anti), t the teacher\'s (0 without one)' },
  'cf-group-weighting': { type: 'enum', choices: ['none', 'inverse'], default: 'none', help: 'inverse: weight each pair by N / (groups × pairs of its group), so small groups count alike' },
  'pairs-data': { type: 'string', value: '<dir>', help: 'data directory for --cf-pairs stereoset|crows-pairs (default: $DIKE_DATA, else the shipped data)' },
  valid: { type: 'string', value: 'text-file', help: 'held-out text (or labelled file) evaluated at the end' },
  'valid-lines': { type: 'int', min: 1, default: 200, help: 'held-out lines used' },
  dtype: { type: 'enum', choices: ['f32', 'f16'], default: 'f32', help: 'dtype of the written weights' },
  threads: THREADS_FLAG,
  'log-every': { type: 'int', min: 1, default: 10, help: 'steps between progress lines' },
  quiet: { type: 'boolean', help: 'no progress lines' },
};

const trainSpec: CommandSpec = {
  name: 'train',
  summary: 'train or fine-tune a model (masked-LM, causal-LM, classification) with checkpoints and resume',
  flags: {
    model: { type: 'string', value: '<dir>', help: 'fine-tune this model' },
    config: { type: 'string', value: '<config.json>', help: 'train from scratch with this config (with --tokenizer)' },
    tokenizer: { type: 'string', value: '<dir>', help: 'the tokenizer of a from-scratch model' },
    ...TRAIN_FLAGS,
  },
  notes: ['Give --model, or --config and --tokenizer (here or in the recipe).'],
};

const distillSpec: CommandSpec = {
  name: 'distill',
  summary: 'distil a teacher into a smaller student (Hinton KD on temperature-scaled logits, optional hidden-state MSE)',
  positionals: { usage: '<teacher-dir>', min: 1, max: 1 },
  flags: {
    student: { type: 'string', value: '<layers e.g. 0,2 | config.json>', help: "the teacher's blocks to keep, or a student config; required here or in the recipe" },
    temperature: { type: 'number', min: 0, exclusiveMin: true, default: 2, help: 'softmax temperature of the KD term' },
    'alpha-kd': { type: 'number', min: 0, default: 0.5, help: 'weight of the KD term' },
    'alpha-ce': { type: 'number', min: 0, default: 0.5, help: 'weight of the hard-label cross-entropy' },
    'hidden-mse': { type: 'number', min: 0, default: 0, help: 'weight of the hidden-state MSE (same hidden size)' },
    ...TRAIN_FLAGS,
  },
};

/**
 * Flags over recipe keys, every value checked by the flag table (a bad recipe value names the recipe
 * file and key); recipe paths are relative to the recipe file.
 */
interface Merged {
  str(k: string): string | undefined;
  num(k: string): number;
  optNum(k: string): number | undefined;
  list(k: string): string[];
  flag(k: string): boolean;
  error(flag: string, problem: string): Error;
}

function merged(args: Parsed): Merged {
  let recipe: Record<string, unknown> = {};
  let recipeDir = process.cwd();
  const recipeFile = args.str('recipe');
  if (recipeFile !== undefined) {
    recipe = readJsonObject(recipeFile);
    recipeDir = path.dirname(path.resolve(recipeFile));
    for (const k of Object.keys(recipe)) {
      if (!Object.hasOwn(args.spec.flags, k) || k === 'recipe') throw new DikeError(recipeFile, `"${k}"`, `unknown setting (dike ${args.spec.name} has no --${k})`);
    }
  }
  const value = (k: string): FlagValue | undefined => {
    if (args.has(k)) return args.values[k] as FlagValue;
    const r = recipe[k];
    if (r !== undefined && r !== null) {
      const f = args.spec.flags[k]!;
      if (typeof r === 'object' || (f.type === 'boolean' && typeof r !== 'boolean')) {
        throw new DikeError(recipeFile!, `"${k}"`, f.type === 'boolean' ? 'expected true or false' : 'expected a number or a string');
      }
      if (f.type === 'boolean') return r as boolean;
      const v = convertValue(f, String(r));
      if (typeof v === 'object' && !Array.isArray(v)) throw new DikeError(recipeFile!, `"${k}"`, v.problem);
      return ['config', 'tokenizer', 'valid'].includes(k) && typeof v === 'string' ? path.resolve(recipeDir, v) : v;
    }
    return args.values[k] as FlagValue | undefined;
  };
  return {
    str: (k) => value(k) as string | undefined,
    num: (k) => value(k) as number,
    optNum: (k) => value(k) as number | undefined,
    list: (k) => (value(k) as string[] | undefined) ?? [],
    flag: (k) => value(k) === true,
    error: (flag, problem) => args.error(flag, problem),
  };
}

function settingsFrom(m: Merged, objective: Objective): TrainSettings {
  const data = m.str('data');
  if (data === undefined) throw m.error('--data', 'is required (here or in the recipe)');
  const clipRaw = m.str('clip')!;
  const clip = clipRaw === 'none' ? undefined : Number(clipRaw);
  if (clip !== undefined && !(Number.isFinite(clip) && clip > 0)) throw m.error('--clip', `expected a positive number or none, got "${clipRaw}"`);
  const valid = m.str('valid');
  const threads = m.optNum('threads');
  return {
    objective,
    data: data.split(','),
    seq: m.num('seq'),
    batch: m.num('batch'),
    steps: m.num('steps'),
    schedule: {
      peak: m.num('lr'),
      warmup: m.num('warmup'),
      decay: m.str('decay') as 'cosine' | 'linear' | 'constant',
      minRatio: m.num('min-lr-ratio'),
    },
    adamw: {
      beta1: m.num('beta1'),
      beta2: m.num('beta2'),
      eps: m.num('eps'),
      weightDecay: m.num('weight-decay'),
      ...(clip === undefined ? {} : { maxGradNorm: clip }),
    },
    seed: m.num('seed'),
    mlmProbability: m.num('mlm-probability'),
    checkpointEvery: m.num('checkpoint-every'),
    freeze: m.list('freeze'),
    keepSparsity: m.flag('keep-sparsity'),
    ...counterfactualFrom(m),
    ...(valid !== undefined ? { valid: { file: valid, lines: m.num('valid-lines') } } : {}),
    dtype: m.str('dtype') === 'f16' ? 'F16' : 'F32',
    ...(threads !== undefined ? { threads } : {}),
  };
}

function counterfactualFrom(m: Merged): Pick<TrainSettings, 'counterfactual'> {
  const source = m.str('cf-pairs');
  if (source === undefined) return {};
  const limit = m.optNum('cf-pairs-limit');
  const weighting = m.str('cf-group-weighting') as 'none' | 'inverse';
  return { counterfactual: { source, ...(limit !== undefined ? { limit } : {}), perStep: m.num('cf-per-step'), weight: m.num('cf-weight'), ...(weighting === 'inverse' ? { groupWeighting: weighting } : {}) } };
}

/** The sentence pairs of --cf-pairs (measure/pairs.ts), or none. */
function pairsFor(m: Merged, settings: TrainSettings): { pairs?: TextPair[] } {
  const cf = settings.counterfactual;
  if (cf === undefined) return {};
  const dataDir = resolveDataDir(m.str('pairs-data'), { embedded: true });
  return { pairs: sentencePairs(dataDir, { source: cf.source, ...(cf.limit !== undefined ? { limit: cf.limit } : {}) }) };
}

function reporter(quiet: boolean, every: number, steps: number): { onStep: (l: StepLog) => void; onMessage: (s: string) => void } {
  const clock = (s: number): string => `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s`;
  return {
    onStep: (l) => {
      if (quiet || (l.step % every !== 0 && l.step !== steps)) return;
      process.stderr.write(
        `step ${l.step}/${steps}  loss ${l.loss.toFixed(4)}  |g| ${l.gradNorm.toFixed(3)}  lr ${l.lr.toExponential(2)}  ` +
          `${Math.round(l.tokensPerSecond)} tok/s  ETA ${clock(l.etaSeconds)}\n`,
      );
    },
    onMessage: (s) => {
      if (!quiet) process.stderr.write(s + '\n');
    },
  };
}

function objectiveOf(m: Merged, model: TrainableModel): Objective {
  const o = m.str('objective') ?? model.task;
  if (o !== 'masked-lm' && o !== 'causal-lm' && o !== 'sequence-classification') {
    throw m.error('--objective', `expected masked-lm, causal-lm or sequence-classification (the model is ${model.task})`);
  }
  return o;
}

export const trainCommand = {
  spec: trainSpec,
  async run(argv: string[]): Promise<void> {
    const m = merged(parseFlags(trainSpec, argv));
    const out = m.str('out');
    if (out === undefined) throw m.error('--out', 'is required (here or in the recipe)');
    if (m.str('data') === undefined) throw m.error('--data', 'is required (here or in the recipe)');
    const modelDir = m.str('model');
    const config = m.str('config');
    const tk = m.str('tokenizer');
    if (modelDir !== undefined && (config !== undefined || tk !== undefined)) throw m.error(config !== undefined ? '--config' : '--tokenizer', 'give --model, or --config and --tokenizer, not both');
    if (modelDir === undefined && (config === undefined || tk === undefined)) throw m.error(config === undefined ? '--model' : '--tokenizer', 'give --model <dir>, or --config and --tokenizer');
    settingsFrom(m, 'masked-lm'); // every setting checked before the model is read
    const seed = m.num('seed');
    let model: TrainableModel;
    let tokenizerDir: string;
    if (modelDir !== undefined) {
      tokenizerDir = (await resolveModelArg(modelDir, { log: (l) => process.stderr.write(l + '\n') })).dir;
      model = loadCheckpoint(tokenizerDir);
    } else {
      model = initFromConfig(config!, tk!, seed);
      tokenizerDir = tk!;
    }
    const settings = settingsFrom(m, objectiveOf(m, model));
    frozenSelector(model, settings.freeze); // a --freeze item that matches nothing is refused before training
    const result = await train(model, settings, out, { tokenizerDir, ...pairsFor(m, settings), ...reporter(m.flag('quiet'), m.num('log-every'), settings.steps) });
    process.stdout.write(
      `wrote ${out}: ${result.steps} steps, final loss ${result.losses.at(-1)?.toFixed(4)}` +
        (result.heldOut ? `, held-out ${result.heldOut.kind} ${result.heldOut.value.toFixed(3)}` : '') + '\n',
    );
  },
};

export const distillCommand = {
  spec: distillSpec,
  async run(argv: string[]): Promise<void> {
    const args = parseFlags(distillSpec, argv);
    const m = merged(args);
    const out = m.str('out');
    const studentSpec = m.str('student');
    if (out === undefined) throw m.error('--out', 'is required (here or in the recipe)');
    if (studentSpec === undefined) throw m.error('--student', 'is required (here or in the recipe)');
    settingsFrom(m, 'masked-lm'); // every setting checked before the models are read
    const teacher = loadCheckpoint((await resolveModelArg(args.positionals[0]!, { log: (l) => process.stderr.write(l + '\n') })).dir);
    const spec = parseStudent(studentSpec);
    const seed = m.num('seed');
    const student = 'layers' in spec ? studentFromLayers(teacher, spec.layers) : initFromConfig(spec.configFile, teacher.dir, seed);
    if (student.shape.outputSize !== teacher.shape.outputSize) {
      throw new DikeError(studentSpec, '"vocab_size"', `the student's ${student.shape.outputSize} outputs differ from the teacher's ${teacher.shape.outputSize}`);
    }
    const hiddenWeight = m.num('hidden-mse');
    let hiddenPairs: [number, number][] | undefined;
    if (hiddenWeight > 0) {
      if (!('layers' in spec) && student.shape.hiddenSize !== teacher.shape.hiddenSize) {
        throw m.error('--hidden-mse', 'needs the student and teacher to have the same hidden size');
      }
      // Student layer i+1 (output of its i-th block) matches the teacher block it was copied from;
      // a student from a config matches teacher layers spread evenly.
      const Ls = student.shape.numLayers;
      const Lt = teacher.shape.numLayers;
      const src = 'layers' in spec ? spec.layers : Array.from({ length: Ls }, (_, i) => Math.round(((i + 1) * Lt) / Ls) - 1);
      hiddenPairs = [[0, 0], ...src.map((t, i): [number, number] => [i + 1, t + 1])];
    }
    const distill: DistillTerms = {
      temperature: m.num('temperature'),
      kdWeight: m.num('alpha-kd'),
      ceWeight: m.num('alpha-ce'),
      ...(hiddenPairs ? { hiddenPairs, hiddenWeight } : {}),
    };
    const settings = { ...settingsFrom(m, objectiveOf(m, teacher)), distill };
    frozenSelector(student, settings.freeze);
    const result = await train(student, settings, out, { tokenizerDir: teacher.dir, teacher, ...pairsFor(m, settings), ...reporter(m.flag('quiet'), m.num('log-every'), settings.steps) });
    process.stdout.write(
      `wrote ${out}: student with ${student.shape.numLayers} of the teacher's ${teacher.shape.numLayers} layers, ${result.steps} steps, final loss ${result.losses.at(-1)?.toFixed(4)}` +
        (result.heldOut ? `, held-out ${result.heldOut.kind} ${result.heldOut.value.toFixed(3)}` : '') + '\n',
    );
  },
};
