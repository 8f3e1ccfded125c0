import { corpusFile } from '../embedded.js';
import { resolveModelArg } from '../testbed/testbed.js';
import { resolveDataDir } from '../measure/data.js';
import { sentencePairs, type SentencePairRequest } from '../measure/pairs.js';
import { readQualityLines } from '../audit/audit.js';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { DikeError } from '../errors.js';
import { loadCheckpoint } from '../model/checkpoint.js';
import { applyRecipe, parseRecipe, readRecipe, writeCompressed, type Recipe } from '../compress/recipe.js';
import { findMethod, METHODS } from '../compress/registry.js';
import { MAX_CALIBRATION_SAMPLES, MAX_CALIBRATION_SEQ_LEN } from '../compress/calibration-types.js';
import { parseFlags, type CommandSpec, type Parsed } from './flags.js';
import { DATA_FLAG, SEED_FLAG, THREADS_FLAG, MODEL_POSITIONAL_HELP } from './common-flags.js';

const spec: CommandSpec = {
  name: 'compress',
  summary: `compress a model with a recipe or one method (${METHODS.map((m) => m.name).join(', ')}); writes a loadable HF directory`,
  positionals: { usage: '<model-dir>', min: 1, max: 1, help: MODEL_POSITIONAL_HELP },
  flags: {
    recipe: { type: 'string', value: 'recipe.yaml', help: 'a recipe file (YAML or JSON): a list of methods applied in order' },
    method: { type: 'enum', choices: METHODS.map((m) => m.name), help: 'one method instead of a recipe' },
    sparsity: { type: 'number', min: 0, max: 1, exclusiveMax: true, help: 'fraction of weights to remove' },
    bits: { type: 'int', min: 1, max: 16, help: 'quantization width' },
    'group-size': { type: 'int', min: -1, help: 'quantization group width (-1: per channel)' },
    pattern: { type: 'string', value: 'N:M', help: 'semi-structured sparsity pattern, e.g. 2:4' },
    global: { type: 'boolean', help: 'rank weights across all selected matrices, not per matrix' },
    opt: { type: 'string', value: 'key=value', multiple: true, help: "another option of the method (see the method's reference)" },
    modules: { type: 'list', choices: ['attention', 'ffn', 'head'], help: 'which linear maps to compress (default attention,ffn)' },
    layers: { type: 'int-list', min: 0, help: 'which blocks to compress (default all); each must exist in the model' },
    calibration: {
      type: 'string',
      value: 'text-file',
      help: 'calibration text, one passage per line (GPTQ, SparseGPT, Wanda, …; default <data>/lm_corpus/train.txt, else the shipped excerpt)',
    },
    samples: { type: 'int', min: 1, max: MAX_CALIBRATION_SAMPLES, default: 128, help: 'calibration sequences (calibrated methods)' },
    'seq-len': { type: 'int', min: 4, max: MAX_CALIBRATION_SEQ_LEN, default: 128, help: 'tokens per calibration sequence (calibrated methods)' },
    data: { ...DATA_FLAG, help: 'data directory: lm_corpus/train.txt is the default calibration text, stereoset/crows-pairs the fair-gptq pairs (default: $DIKE_DATA, else the shipped data)' },
    seed: { ...SEED_FLAG, default: 0 },
    threads: THREADS_FLAG,
    out: { type: 'string', value: '<dir>', required: true, help: 'the output directory (new or empty)' },
  },
  notes: [
    'Give --recipe or --method. The method flags (--sparsity … --layers), --calibration, --samples, --seq-len and --seed apply',
    'to --method only; a recipe file holds its own. Larger --samples are refused rather than allocated.',
  ],
};

/** The flags a recipe file replaces. */
const METHOD_ONLY = ['sparsity', 'bits', 'group-size', 'pattern', 'global', 'opt', 'modules', 'layers', 'calibration', 'samples', 'seq-len', 'seed'];

/** The name the one-step recipe built from flags goes by; its errors are reported against the flags. */
const FLAGS_SOURCE = 'command-line.json';

/** Recipe keys (as errors name them) → the flag that set them. */
function flagOf(place: string): string {
  const key = /"([^"]+)"/.exec(place)?.[1] ?? '';
  // A step's own options (place "step N …") are distinct from the recipe's top-level keys: a step's
  // `calibration` is its mode (--opt calibration=…), the recipe's is the text (--calibration).
  const stepKeys: Record<string, string> = {
    sparsity: '--sparsity',
    bits: '--bits',
    group_size: '--group-size',
    pattern: '--pattern',
    'scope.layers': '--layers',
    'scope.modules': '--modules',
    method: '--method',
  };
  const recipeKeys: Record<string, string> = {
    'calibration.samples': '--samples',
    'calibration.seq_len': '--seq-len',
    calibration: '--calibration',
    seed: '--seed',
  };
  const mapped = place.startsWith('step ') ? stepKeys[key] : recipeKeys[key] ?? stepKeys[key];
  return mapped ?? (key ? `--opt ${key}` : '--method');
}

/** A DikeError about the recipe built from flags → a one-line usage error naming the flag. */
function asFlagError(args: Parsed, e: unknown): unknown {
  return e instanceof DikeError && e.file === FLAGS_SOURCE ? args.error(flagOf(e.place), e.problem) : e;
}

/** The method flags map onto recipe option names (kebab-case → snake_case). */
const METHOD_FLAGS = ['sparsity', 'bits', 'group-size', 'pattern'] as const;

export function recipeFromFlags(args: Parsed): Recipe {
  const step: Record<string, unknown> = { method: args.str('method') };
  for (const f of METHOD_FLAGS) if (args.has(f)) step[f.replace(/-/g, '_')] = args.values[f];
  if (args.bool('global')) step['global'] = true;
  for (const kv of args.all('opt')) {
    const eq = kv.indexOf('=');
    if (eq <= 0) throw args.error('--opt', `expected key=value, got "${kv}"`);
    step[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  const scope: Record<string, unknown> = {};
  if (args.has('modules')) scope['modules'] = args.list('modules');
  if (args.has('layers')) scope['layers'] = args.ints('layers');
  if (Object.keys(scope).length > 0) step['scope'] = scope;
  const doc: Record<string, unknown> = { seed: args.num('seed'), steps: [step] };
  const calibration = args.str('calibration') ?? (findMethod(args.str('method')!)?.needsCalibration ? defaultCalibrationFile(args.str('data')) : undefined);
  if (calibration !== undefined) doc['calibration'] = { file: calibration, samples: args.num('samples'), seq_len: args.num('seq-len') };
  // Same validation as a recipe file; relative calibration paths resolve against the working directory.
  try {
    return parseRecipe(JSON.stringify(doc), FLAGS_SOURCE);
  } catch (e) {
    throw asFlagError(args, e);
  }
}

/** The default calibration text: lm_corpus/train.txt of the data directory (--data / DIKE_DATA), else the shipped excerpt. */
function defaultCalibrationFile(dataArg: string | undefined): string {
  return corpusFile('train', resolveDataDir(dataArg, { embedded: true })).file;
}

const needsCalibration = (recipe: Recipe): boolean => recipe.steps.some((st) => findMethod(st.method)?.needsCalibration === true);

export const compressCommand = {
  spec,
  async run(argv: string[]): Promise<void> {
    const args = parseFlags(spec, argv);
    const out = args.str('out')!;
    const recipeFile = args.str('recipe');
    if ((recipeFile === undefined) === (args.str('method') === undefined)) throw args.error('--recipe/--method', 'give --recipe or --method (one of them)');
    if (recipeFile !== undefined) {
      const extra = METHOD_ONLY.find((f) => args.has(f));
      if (extra !== undefined) throw args.error(`--${extra}`, 'applies to --method only (a recipe file holds its own settings)');
    } else {
      const calibrated = findMethod(args.str('method')!)?.needsCalibration === true;
      const orphan = ['samples', 'seq-len', 'calibration'].find((f) => args.has(f));
      if (orphan !== undefined && !calibrated) throw args.error(`--${orphan}`, `method ${args.str('method')} uses no calibration text`);
    }
    if (existsSync(out) && (!statSync(out).isDirectory() || readdirSync(out).length > 0)) throw new DikeError(out, '', 'output directory exists and is not empty');
    const threads = args.num('threads');
    const recipe = recipeFile !== undefined ? readRecipe(recipeFile) : recipeFromFlags(args);
    // A recipe file that names no calibration text gets the default one (recorded in compression.json).
    if (recipe.calibration === undefined && recipe.calibrationTokens === undefined && needsCalibration(recipe)) recipe.calibration = { file: defaultCalibrationFile(args.str('data')), samples: 128, seqLen: 128 };
    const ckpt = loadCheckpoint((await resolveModelArg(args.positionals[0]!, { log: (l) => process.stderr.write(l + '\n') })).dir);
    let result: Awaited<ReturnType<typeof applyRecipe>>;
    try {
      // Sentence pairs for fair-gptq (pairs=stereoset|crows-pairs|<file>), from --data / DIKE_DATA / the embedded data.
      // Counterfactual pairs read the recipe's calibration text, else the default one; fair-gptq's
      // quality_budget reads the held-out split of the same corpus (the audit's quality proxy text).
      const dataDir = resolveDataDir(args.str('data'), { embedded: true });
      const pairs = (req: SentencePairRequest) => sentencePairs(dataDir, { textFile: defaultCalibrationFile(args.str('data')), ...req });
      const heldOut = (n: number) => readQualityLines(corpusFile('valid', dataDir).file, n).lines;
      // In place: the dense weights are not needed after this, so no second float32 copy is made.
      result = await applyRecipe(ckpt, recipe, { ...(threads !== undefined ? { threads } : {}), pairs, heldOut, inPlace: true });
    } catch (e) {
      throw asFlagError(args, e);
    }
    writeCompressed(ckpt, result, recipe, out);
    const matrices = result.reports.flat();
    const sparsity = matrices.filter((m) => m.sparsity !== undefined);
    process.stdout.write(
      `wrote ${out}: ${recipe.steps.map((s) => s.method).join(' → ')} on ${new Set(matrices.map((m) => m.weight)).size} matrices` +
        (sparsity.length ? `, mean sparsity ${(100 * sparsity.reduce((s, m) => s + m.sparsity!, 0) / sparsity.length).toFixed(1)}%` : '') +
        '\n',
    );
  },
};
