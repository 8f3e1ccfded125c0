import { resolveModel } from '../embedded.js';
import { parseArgs } from 'node:util';
import { loadCheckpoint } from '../model/checkpoint.js';
import { applyRecipe, parseRecipe, readRecipe, writeCompressed, type Recipe } from '../compress/recipe.js';
import { METHODS } from '../compress/registry.js';
import { parsing, positiveInt, UsageError } from './args.js';
import { resolveDataDir } from '../measure/data.js';
import { sentencePairs } from '../measure/pairs.js';

const usage =
  'dike compress <model-dir> (--recipe recipe.yaml | --method <name> [--sparsity S] [--bits B] [--group-size G] [--pattern N:M] ' +
  '[--global] [--opt key=value]… [--modules attention,ffn,head] [--layers 0,1,…]) [--calibration text-file] [--samples N] [--seq-len N] ' +
  '[--seed N] [--threads N] [--data <dir>] --out <dir>';

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
  if (typeof v['calibration'] === 'string') {
    doc['calibration'] = {
      file: v['calibration'],
      samples: v['samples'] !== undefined ? Number(v['samples']) : 128,
      seq_len: v['seq-len'] !== undefined ? Number(v['seq-len']) : 128,
    };
  }
  // Same validation as a recipe file; relative calibration paths resolve against the working directory.
  return parseRecipe(JSON.stringify(doc), 'command-line.json');
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
          seed: { type: 'string' },
          threads: { type: 'string' },
          data: { type: 'string' },
          out: { type: 'string' },
        },
      }),
    );
    if (positionals.length !== 1) throw new UsageError(`expected one model directory\nusage: ${usage}`);
    if (values.out === undefined) throw new UsageError(`--out is required\nusage: ${usage}`);
    if ((values.recipe === undefined) === (values.method === undefined)) throw new UsageError(`give --recipe or --method\nusage: ${usage}`);
    const threads = positiveInt(values.threads, '--threads');
    const recipe = values.recipe !== undefined ? readRecipe(values.recipe) : recipeFromFlags(values);
    const ckpt = loadCheckpoint(resolveModel(positionals[0]!).dir);
    // Sentence pairs for fair-gptq (pairs=stereoset|crows-pairs|<file>), from --data / DIKE_DATA / the embedded data.
    const pairs = (req: { source: string; limit?: number }) => sentencePairs(resolveDataDir(values.data, { embedded: true }), req);
    const result = await applyRecipe(ckpt, recipe, { ...(threads !== undefined ? { threads } : {}), pairs });
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
