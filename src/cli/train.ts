/**
 * `dike train` and `dike distill`: flags (or a JSON recipe with the same keys) → TrainSettings → train().
 */
import { resolveModel } from '../embedded.js';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { DikeError } from '../errors.js';
import { loadCheckpoint } from '../model/checkpoint.js';
import { readJsonObject } from '../model/config.js';
import { initFromConfig, parseStudent, studentFromLayers, type TrainableModel } from '../train/init.js';
import { train, type StepLog, type TrainSettings } from '../train/loop.js';
import type { DistillTerms } from '../train/step.js';
import type { Objective } from '../train/corpus.js';
import { parsing, UsageError } from './args.js';

const TRAIN_FLAGS = {
  recipe: { type: 'string' },
  data: { type: 'string' },
  out: { type: 'string' },
  objective: { type: 'string' },
  seq: { type: 'string' },
  batch: { type: 'string' },
  steps: { type: 'string' },
  lr: { type: 'string' },
  warmup: { type: 'string' },
  decay: { type: 'string' },
  'min-lr-ratio': { type: 'string' },
  beta1: { type: 'string' },
  beta2: { type: 'string' },
  eps: { type: 'string' },
  'weight-decay': { type: 'string' },
  clip: { type: 'string' },
  seed: { type: 'string' },
  'mlm-probability': { type: 'string' },
  'checkpoint-every': { type: 'string' },
  freeze: { type: 'string' },
  'keep-sparsity': { type: 'boolean' },
  valid: { type: 'string' },
  'valid-lines': { type: 'string' },
  dtype: { type: 'string' },
  threads: { type: 'string' },
  quiet: { type: 'boolean' },
  'log-every': { type: 'string' },
} as const;

const COMMON_USAGE =
  '--data <text-file>[,<text-file>…] --out <dir> [--recipe recipe.json] [--objective masked-lm|causal-lm|sequence-classification] [--seq 128] [--batch 32] [--steps 500] ' +
  '[--lr 5e-4] [--warmup 50] [--decay cosine|linear|constant] [--min-lr-ratio 0.1] [--beta1 0.9] [--beta2 0.98] [--eps 1e-6] [--weight-decay 0.01] ' +
  '[--clip 1.0] [--seed 0] [--mlm-probability 0.15] [--checkpoint-every 50] [--freeze embeddings|attention|ffn|head|norms|layer.N|name-prefix,…] [--keep-sparsity] [--valid text-file] ' +
  '[--valid-lines 200] [--dtype f32|f16] [--threads N] [--log-every 10] [--quiet]';

const trainUsage = `dike train (--model <dir> | --config <config.json> --tokenizer <dir>) ${COMMON_USAGE}`;
const distillUsage =
  `dike distill <teacher-dir> --student <layers e.g. 0,2 | config.json> [--temperature 2] [--alpha-kd 0.5] [--alpha-ce 0.5] ` +
  `[--hidden-mse W] ${COMMON_USAGE}`;

type Values = Record<string, string | boolean | undefined>;

/** Flags over recipe keys; recipe paths are relative to the recipe file. */
function merged(values: Values): { get: (k: string) => string | undefined; flag: (k: string) => boolean; recipeDir: string } {
  let recipe: Record<string, unknown> = {};
  let recipeDir = process.cwd();
  if (typeof values['recipe'] === 'string') {
    recipe = readJsonObject(values['recipe']);
    recipeDir = path.dirname(path.resolve(values['recipe']));
  }
  const get = (k: string): string | undefined => {
    const v = values[k];
    if (typeof v === 'string') return v;
    const r = recipe[k];
    if (r === undefined || r === null) return undefined;
    if (typeof r === 'object') throw new DikeError(String(values['recipe']), `"${k}"`, 'expected a number or a string');
    const s = String(r);
    return ['config', 'tokenizer', 'valid'].includes(k) && typeof r === 'string' ? path.resolve(recipeDir, s) : s;
  };
  const flag = (k: string): boolean => values[k] === true || recipe[k] === true;
  return { get, flag, recipeDir };
}

function num(v: string | undefined, flag: string, dflt: number, check: (n: number) => boolean = Number.isFinite): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || !check(n)) throw new UsageError(`--${flag}: "${v}" is not valid`);
  return n;
}
const posInt = (n: number): boolean => Number.isInteger(n) && n > 0;
const nonNegInt = (n: number): boolean => Number.isInteger(n) && n >= 0;

function settingsFrom(m: ReturnType<typeof merged>, objective: Objective, usage: string): TrainSettings {
  const data = m.get('data');
  if (data === undefined) throw new UsageError(`--data is required\nusage: ${usage}`);
  const decay = m.get('decay') ?? 'cosine';
  if (decay !== 'cosine' && decay !== 'linear' && decay !== 'constant') throw new UsageError(`--decay expects cosine, linear or constant, got "${decay}"`);
  const dtype = (m.get('dtype') ?? 'f32').toLowerCase();
  if (dtype !== 'f32' && dtype !== 'f16') throw new UsageError(`--dtype expects f32 or f16, got "${dtype}"`);
  const clip = m.get('clip');
  const valid = m.get('valid');
  const threads = m.get('threads');
  return {
    objective,
    data: data.split(','),
    seq: num(m.get('seq'), 'seq', 128, (n) => posInt(n) && n >= 3),
    batch: num(m.get('batch'), 'batch', 32, posInt),
    steps: num(m.get('steps'), 'steps', 500, posInt),
    schedule: {
      peak: num(m.get('lr'), 'lr', 5e-4, (n) => n > 0),
      warmup: num(m.get('warmup'), 'warmup', 50, nonNegInt),
      decay,
      minRatio: num(m.get('min-lr-ratio'), 'min-lr-ratio', 0.1, (n) => n >= 0 && n <= 1),
    },
    adamw: {
      beta1: num(m.get('beta1'), 'beta1', 0.9, (n) => n >= 0 && n < 1),
      beta2: num(m.get('beta2'), 'beta2', 0.98, (n) => n >= 0 && n < 1),
      eps: num(m.get('eps'), 'eps', 1e-6, (n) => n > 0),
      weightDecay: num(m.get('weight-decay'), 'weight-decay', 0.01, (n) => n >= 0),
      ...(clip === 'none' ? {} : { maxGradNorm: num(clip, 'clip', 1.0, (n) => n > 0) }),
    },
    seed: num(m.get('seed'), 'seed', 0, nonNegInt),
    mlmProbability: num(m.get('mlm-probability'), 'mlm-probability', 0.15, (n) => n > 0 && n < 1),
    checkpointEvery: num(m.get('checkpoint-every'), 'checkpoint-every', 50, nonNegInt),
    freeze: (m.get('freeze') ?? '').split(',').filter((s) => s !== ''),
    keepSparsity: m.flag('keep-sparsity'),
    ...(valid !== undefined ? { valid: { file: valid, lines: num(m.get('valid-lines'), 'valid-lines', 200, posInt) } } : {}),
    dtype: dtype === 'f16' ? 'F16' : 'F32',
    ...(threads !== undefined ? { threads: num(threads, 'threads', 1, posInt) } : {}),
  };
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

function objectiveOf(model: TrainableModel, requested: string | undefined): Objective {
  const o = requested ?? model.task;
  if (o !== 'masked-lm' && o !== 'causal-lm' && o !== 'sequence-classification') {
    throw new UsageError(`--objective expects masked-lm, causal-lm or sequence-classification (the model is ${model.task})`);
  }
  return o;
}

export const trainCommand = {
  summary: 'train or fine-tune a model (masked-LM, causal-LM, classification) with checkpoints and resume',
  usage: trainUsage,
  async run(argv: string[]): Promise<void> {
    const { values } = parsing(trainUsage, () =>
      parseArgs({ args: argv, strict: true, options: { ...TRAIN_FLAGS, model: { type: 'string' }, config: { type: 'string' }, tokenizer: { type: 'string' } } }),
    );
    const m = merged(values);
    const out = m.get('out');
    if (out === undefined) throw new UsageError(`--out is required\nusage: ${trainUsage}`);
    const modelDir = m.get('model');
    const config = m.get('config');
    let model: TrainableModel;
    let tokenizerDir: string;
    const seed = num(m.get('seed'), 'seed', 0, nonNegInt);
    if (modelDir !== undefined) {
      if (config !== undefined) throw new UsageError('give --model or --config, not both');
      tokenizerDir = resolveModel(modelDir).dir;
      model = loadCheckpoint(tokenizerDir);
    } else {
      const tk = m.get('tokenizer');
      if (config === undefined || tk === undefined) throw new UsageError(`give --model <dir>, or --config and --tokenizer\nusage: ${trainUsage}`);
      model = initFromConfig(config, tk, seed);
      tokenizerDir = tk;
    }
    const settings = settingsFrom(m, objectiveOf(model, m.get('objective')), trainUsage);
    const result = await train(model, settings, out, { tokenizerDir, ...reporter(m.flag('quiet'), num(m.get('log-every'), 'log-every', 10, posInt), settings.steps) });
    process.stdout.write(
      `wrote ${out}: ${result.steps} steps, final loss ${result.losses.at(-1)?.toFixed(4)}` +
        (result.heldOut ? `, held-out ${result.heldOut.kind} ${result.heldOut.value.toFixed(3)}` : '') + '\n',
    );
  },
};

export const distillCommand = {
  summary: 'distil a teacher into a smaller student (Hinton KD on temperature-scaled logits, optional hidden-state MSE)',
  usage: distillUsage,
  async run(argv: string[]): Promise<void> {
    const { values, positionals } = parsing(distillUsage, () =>
      parseArgs({
        args: argv,
        allowPositionals: true,
        strict: true,
        options: { ...TRAIN_FLAGS, student: { type: 'string' }, temperature: { type: 'string' }, 'alpha-kd': { type: 'string' }, 'alpha-ce': { type: 'string' }, 'hidden-mse': { type: 'string' } },
      }),
    );
    if (positionals.length !== 1) throw new UsageError(`expected one teacher directory\nusage: ${distillUsage}`);
    const m = merged(values);
    const out = m.get('out');
    const studentSpec = m.get('student');
    if (out === undefined || studentSpec === undefined) throw new UsageError(`--student and --out are required\nusage: ${distillUsage}`);
    const teacher = loadCheckpoint(resolveModel(positionals[0]!).dir);
    const spec = parseStudent(studentSpec);
    const seed = num(m.get('seed'), 'seed', 0, nonNegInt);
    const student = 'layers' in spec ? studentFromLayers(teacher, spec.layers) : initFromConfig(spec.configFile, teacher.dir, seed);
    if (student.shape.outputSize !== teacher.shape.outputSize) {
      throw new DikeError(studentSpec, '"vocab_size"', `the student's ${student.shape.outputSize} outputs differ from the teacher's ${teacher.shape.outputSize}`);
    }
    const hiddenWeight = num(m.get('hidden-mse'), 'hidden-mse', 0, (n) => n >= 0);
    let hiddenPairs: [number, number][] | undefined;
    if (hiddenWeight > 0) {
      if (!('layers' in spec) && student.shape.hiddenSize !== teacher.shape.hiddenSize) {
        throw new UsageError('--hidden-mse needs the student and teacher to have the same hidden size');
      }
      // Student layer i+1 (output of its i-th block) matches the teacher block it was copied from;
      // a student from a config matches teacher layers spread evenly.
      const Ls = student.shape.numLayers;
      const Lt = teacher.shape.numLayers;
      const src = 'layers' in spec ? spec.layers : Array.from({ length: Ls }, (_, i) => Math.round(((i + 1) * Lt) / Ls) - 1);
      hiddenPairs = [[0, 0], ...src.map((t, i): [number, number] => [i + 1, t + 1])];
    }
    const distill: DistillTerms = {
      temperature: num(m.get('temperature'), 'temperature', 2, (n) => n > 0),
      kdWeight: num(m.get('alpha-kd'), 'alpha-kd', 0.5, (n) => n >= 0),
      ceWeight: num(m.get('alpha-ce'), 'alpha-ce', 0.5, (n) => n >= 0),
      ...(hiddenPairs ? { hiddenPairs, hiddenWeight } : {}),
    };
    const settings = { ...settingsFrom(m, objectiveOf(teacher, m.get('objective')), distillUsage), distill };
    const result = await train(student, settings, out, { tokenizerDir: teacher.dir, teacher, ...reporter(m.flag('quiet'), num(m.get('log-every'), 'log-every', 10, posInt), settings.steps) });
    process.stdout.write(
      `wrote ${out}: student with ${student.shape.numLayers} of the teacher's ${teacher.shape.numLayers} layers, ${result.steps} steps, final loss ${result.losses.at(-1)?.toFixed(4)}` +
        (result.heldOut ? `, held-out ${result.heldOut.kind} ${result.heldOut.value.toFixed(3)}` : '') + '\n',
    );
  },
};
