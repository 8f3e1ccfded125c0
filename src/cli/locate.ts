import path from 'node:path';
import { corpusFile } from '../embedded.js';
import { resolveModelArg } from '../testbed/testbed.js';
import { resolveDataDir } from '../measure/data.js';
import { parseVariant } from '../audit/audit.js';
import { DEFAULT_RESAMPLES, DEFAULT_SEED } from '../measure/stats/bootstrap.js';
import { BENCHMARKS, benchmarkChoices } from '../measure/registry.js';
import { runLocate, type LocateResults } from '../locate/locate.js';
import { UNIT_KINDS, type UnitKind } from '../locate/units.js';
import { Progress } from './progress.js';
import { parseFlags, type CommandSpec } from './flags.js';
import {
  ALPHA_FLAG,
  CALIBRATION_TEXT_FLAG,
  DATA_FLAG,
  DENSE_MODEL_FLAG,
  LIMIT_FLAG,
  QUALITY_LINES_FLAG,
  RESAMPLES_FLAG,
  SCORER_FLAG,
  SEED_FLAG,
  THREADS_FLAG,
  VARIANT_CALIBRATION,
} from './common-flags.js';

const spec: CommandSpec = {
  name: 'locate',
  summary: 'where compression moves bias: leave-one-in/-out per layer-module, matrix or head, first-order prediction',
  flags: {
    model: DENSE_MODEL_FLAG,
    variant: { type: 'string', value: '<recipe.yaml|method:key=value,…|none>', required: true, help: 'the compression to attribute (none: remove each head of the dense model)' },
    benchmark: { type: 'list', choices: benchmarkChoices(), default: 'crows-pairs', help: 'benchmarks to run' },
    scorer: SCORER_FLAG,
    unit: { type: 'enum', choices: UNIT_KINDS, default: 'layer-module', help: 'what a unit is' },
    data: DATA_FLAG,
    out: { type: 'string', value: '<dir>', default: 'locate-out', help: 'locate.json, report.html and the store go here (resumable)' },
    limit: LIMIT_FLAG,
    seed: { ...SEED_FLAG, default: DEFAULT_SEED },
    resamples: { ...RESAMPLES_FLAG, default: DEFAULT_RESAMPLES },
    alpha: { ...ALPHA_FLAG, help: 'significance level (Holm across units)' },
    top: { type: 'int', min: 1, help: 'measure only the K units the first-order prediction ranks highest' },
    'no-leave-one-out': { type: 'boolean', help: 'skip the leave-one-out runs' },
    'predict-only': { type: 'boolean', help: 'only the first-order prediction (compresses nothing)' },
    calibration: CALIBRATION_TEXT_FLAG,
    'quality-lines': QUALITY_LINES_FLAG,
    threads: THREADS_FLAG,
    json: { type: 'boolean', help: 'print locate.json to stdout' },
    quiet: { type: 'boolean', help: 'no progress or table' },
  },
};

const f = (x: number | null | undefined, d = 2): string => (x === null || x === undefined || !Number.isFinite(x) ? '—' : x.toFixed(d));

export function locateTable(r: LocateResults): string {
  const lines: string[] = [];
  for (const b of r.benchmarks) {
    lines.push('', `${b.benchmark} (${b.scorer}) — ${r.unit} units of ${r.variant.name}; full variant Δ ${f(b.full?.delta)}; Spearman(predicted, measured Δ item score) ${f(b.spearman_predicted_score_delta)}`);
    lines.push(`  ${'unit'.padEnd(36)} ${'Δ'.padStart(7)}  ${'Δ 95% CI'.padEnd(16)} ${'p Holm'.padStart(7)} ${'Δ score'.padStart(9)} ${'predicted'.padStart(9)} ${'Δ quality'.padStart(9)} ${'LOO Δ'.padStart(7)}`);
    const units = [...b.units].sort((p, q) => Math.abs(q.delta ?? q.predicted ?? 0) - Math.abs(p.delta ?? p.predicted ?? 0));
    for (const u of units) {
      lines.push(`  ${u.unit.padEnd(36)} ${f(u.delta).padStart(7)}  ${(u.ci95 ? `[${f(u.ci95[0])}, ${f(u.ci95[1])}]` : '—').padEnd(16)} ${f(u.pHolm, 3).padStart(7)} ${f(u.score_delta, 4).padStart(9)} ${f(u.predicted, 4).padStart(9)} ${f(u.quality_delta).padStart(9)} ${f(u.leave_one_out_delta).padStart(7)}${u.significant ? '  *' : ''}`);
    }
  }
  return lines.join('\n');
}

export const locateCommand = {
  spec,
  async run(argv: string[]): Promise<void> {
    // Everything is validated before anything is printed or computed.
    const args = parseFlags(spec, argv);
    const variantArg = args.str('variant')!;
    const unit = args.str('unit') as UnitKind;
    const model = (await resolveModelArg(args.str('model'), { log: (l) => process.stderr.write(l + '\n') }));
    const dataDir = resolveDataDir(args.str('data'), { embedded: true });
    const seed = args.num('seed')!;
    const resamples = args.num('resamples')!;
    const alpha = args.num('alpha')!;
    const qualityLines = args.num('quality-lines')!;
    const calibration = { file: path.resolve(args.str('calibration') ?? corpusFile('train', dataDir).file), ...VARIANT_CALIBRATION };
    const out = args.str('out')!;
    const limit = args.num('limit');
    const threads = args.num('threads');
    const top = args.num('top');
    const scorer = args.str('scorer');
    const quiet = args.bool('quiet');
    const variant = variantArg === 'none' ? { name: 'none', spec: 'none' } : parseVariant(variantArg, calibration, seed);
    const progress = Progress.forCli(quiet);
    const results = await runLocate({
      model: model.dir,
      variant,
      benchmarks: args.list('benchmark')!,
      ...(scorer !== undefined ? { scorer } : {}),
      dataDir,
      out,
      unit,
      seed,
      resamples,
      alpha,
      ...(limit !== undefined ? { limit } : {}),
      ...(threads !== undefined ? { threads } : {}),
      ...(top !== undefined ? { top } : {}),
      qualityLines,
      qualityFile: corpusFile('valid', dataDir).file,
      leaveOneOut: !args.bool('no-leave-one-out'),
      predictOnly: args.bool('predict-only'),
      onProgress: (label, d, t) => progress.update(label, d, t),
      log: (l) => {
        if (!quiet) process.stderr.write(l + '\n');
      },
    });
    if (args.bool('json')) process.stdout.write(JSON.stringify(results, null, 2) + '\n');
    else if (!quiet) process.stdout.write(locateTable(results) + `\n\nreport: ${path.join(out, 'report.html')}\nresults: ${path.join(out, 'locate.json')}\n`);
  },
};
