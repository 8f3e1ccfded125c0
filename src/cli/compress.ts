import { corpusFile, resolveModel } from '../embedded.js';
import { resolveDataDir } from '../measure/data.js';
import { parseArgs } from 'node:util';
import { loadCheckpoint } from '../model/checkpoint.js';
import { applyRecipe, parseRecipe, readRecipe, writeCompressed, type Recipe } from '../compress/recipe.js';
import { findMethod, METHODS } from '../compress/registry.js';
import { parsing, positiveInt, UsageError } from './args.js';

const usage =
  'dike compress <model-dir> (--recipe recipe.yaml | --method <name> [--sparsity S] [--bits B] [--group-size G] [--pattern N:M] ' +
  '[--global] [--opt key=value]… [--modules attention,ffn,head] [--layers 0,1,…]) [--calibration text-file] [--samples N] [--seq-len N] [--data <dir>] ' +
  '[--seed N] [--threads N] --out <dir>';

/** The method flags map onto recipe option names (kebab-case → snake_case). */
const METHOD_FLAGS = ['sparsity', 'bits', 'group-size', 'pattern'] as const;

export function recipeFromFlags(v: Record<string, string | boolean | string[] | undefined>): Recipe {
  const method = v['method'] as string;
  const step: Record<string, unknown> = { method };
  for (const f of METHOD_FLAGS) if (v[f] !== undefined) step[f.replace(/-/g, '_')] = v[f];
  if (v['global']) step['global'] = true;
  for (const kv of (v['opt'] as string[] | undefined) ?? []) {
    const eq = kv.indexOf('=');
    if (eq <= 0) throw new UsageError(`--opt expects key=value, got "${kv}"`);
    step[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  const scope: Record<string, unknown> = {};
  if (typeof v['modules'] === 'string') scope['modules'] = v['modules'].split(',');
  if (typeof v['layers'] === 'string') scope['layers'] = v['layers'].split(',').map(Number);
  if (Object.keys(scope).length > 0) step['scope'] = scope;
  const doc: Record<string, unknown> = { seed: v['seed'] !== undefined ? Number(v['seed']) : 0, steps: [step] };
  const needsCalibration = findMethod(method)?.needsCalibration === true;
  if (typeof v['calibration'] === 'string' || needsCalibration) {
    doc['calibration'] = {
      // Default: lm_corpus/train.txt of the data directory (--data / DIKE_DATA), else the shipped excerpt.
      file: typeof v['calibration'] === 'string' ? v['calibration'] : defaultCalibrationFile(v['data'] as string | undefined),
      samples: v['samples'] !== undefined ? Number(v['samples']) : 128,
      seq_len: v['seq-len'] !== undefined ? Number(v['seq-len']) : 128,
    };
  }
  // Same validation as a recipe file; relative calibration paths resolve against the working directory.
  return parseRecipe(JSON.stringify(doc), 'command-line.json');
}

function defaultCalibrationFile(dataArg: string | undefined): string {
  return corpusFile('train', resolveDataDir(dataArg, { embedded: true })).file;
}

export const compressCommand = {
  summary: `compress a model with a recipe or one method (${METHODS.map((m) => m.name).join(', ')}); writes a loadable HF directory`,
  usage,
  async run(argv: string[]): Promise<void> {
    const { values, positionals } = parsing(usage, () =>
      parseArgs({
        args: argv,
        allowPositionals: true,
        strict: true,
        options: {
          recipe: { type: 'string' },
          method: { type: 'string' },
          sparsity: { type: 'string' },
          bits: { type: 'string' },
          'group-size': { type: 'string' },
          pattern: { type: 'string' },
          global: { type: 'boolean' },
          opt: { type: 'string', multiple: true },
          modules: { type: 'string' },
          layers: { type: 'string' },
          calibration: { type: 'string' },
          samples: { type: 'string' },
          'seq-len': { type: 'string' },
          data: { type: 'string' },
          seed: { type: 'string' },
          threads: { type: 'string' },
          out: { type: 'string' },
        },
      }),
    );
    if (positionals.length !== 1) throw new UsageError(`expected one model directory\nusage: ${usage}`);
    if (values.out === undefined) throw new UsageError(`--out is required\nusage: ${usage}`);
    if ((values.recipe === undefined) === (values.method === undefined)) throw new UsageError(`give --recipe or --method\nusage: ${usage}`);
    const threads = positiveInt(values.threads, '--threads');
    const recipe = values.recipe !== undefined ? readRecipe(values.recipe) : recipeFromFlags(values);
    // A recipe that names no calibration text gets the default one (recorded in compression.json).
    if (recipe.calibration === undefined && recipe.steps.some((st) => findMethod(st.method)?.needsCalibration)) {
      recipe.calibration = { file: defaultCalibrationFile(values.data), samples: 128, seqLen: 128 };
    }
    const ckpt = loadCheckpoint(resolveModel(positionals[0]!).dir);
    const result = await applyRecipe(ckpt, recipe, threads !== undefined ? { threads } : {});
    writeCompressed(ckpt, result, recipe, values.out);
    const matrices = result.reports.flat();
    const sparsity = matrices.filter((m) => m.sparsity !== undefined);
    process.stdout.write(
      `wrote ${values.out}: ${recipe.steps.map((s) => s.method).join(' → ')} on ${new Set(matrices.map((m) => m.weight)).size} matrices` +
        (sparsity.length ? `, mean sparsity ${(100 * sparsity.reduce((s, m) => s + m.sparsity!, 0) / sparsity.length).toFixed(1)}%` : '') +
        '\n',
    );
  },
};
