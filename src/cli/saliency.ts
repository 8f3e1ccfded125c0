import { resolveModel } from '../embedded.js';
import { resolveDataDir } from '../measure/data.js';
import { saveFairnessSaliency } from '../locate/saliency.js';
import { DEFAULT_SEED } from '../measure/stats/bootstrap.js';
import { Progress } from './progress.js';
import { parseFlags, type CommandSpec } from './flags.js';
import { DATA_FLAG, DENSE_MODEL_FLAG, SCORER_FLAG, SEED_FLAG, THREADS_FLAG } from './common-flags.js';

const spec: CommandSpec = {
  name: 'saliency',
  summary: 'fairness saliency of every weight (mean squared gradient of the pair bias score) for cwp',
  flags: {
    model: DENSE_MODEL_FLAG,
    pairs: { type: 'string', value: '<stereoset|crows-pairs|file.json|shuffled:…>', default: 'stereoset', help: 'sentence pairs of the fairness loss (not the benchmark you will score)' },
    limit: { type: 'int', min: 1, default: 200, help: 'use the first N pairs' },
    scorer: SCORER_FLAG,
    data: DATA_FLAG,
    seed: { ...SEED_FLAG, default: DEFAULT_SEED },
    threads: THREADS_FLAG,
    out: { type: 'string', value: '<file.safetensors>', required: true, help: 'where the scores go (one F32 tensor per linear weight)' },
    quiet: { type: 'boolean', help: 'no progress' },
  },
};

export const saliencyCommand = {
  spec,
  async run(argv: string[]): Promise<void> {
    const args = parseFlags(spec, argv);
    const model = resolveModel(args.str('model'));
    const dataDir = resolveDataDir(args.str('data'), { embedded: true });
    const scorer = args.str('scorer');
    const threads = args.num('threads');
    const quiet = args.bool('quiet');
    const progress = Progress.forCli(quiet);
    const r = await saveFairnessSaliency({
      model: model.dir,
      dataDir,
      pairs: args.str('pairs')!,
      limit: args.num('limit')!,
      ...(scorer !== undefined ? { scorer } : {}),
      seed: args.num('seed')!,
      ...(threads !== undefined ? { threads } : {}),
      out: args.str('out')!,
      onProgress: (d, t) => progress.update('saliency', d, t),
    });
    if (!quiet) process.stdout.write(`saliency of ${r.weights} weight matrices over ${r.items} pairs (${r.scorer}) → ${args.str('out')}\n`);
  },
};
