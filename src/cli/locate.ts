import { parseArgs } from 'node:util';
import path from 'node:path';
import { corpusFile, resolveModel } from '../embedded.js';
import { resolveDataDir } from '../measure/data.js';
import { parseVariant } from '../audit/audit.js';
import { DEFAULT_RESAMPLES, DEFAULT_SEED } from '../measure/stats/bootstrap.js';
import { runLocate, type LocateResults } from '../locate/locate.js';
import { UNIT_KINDS, type UnitKind } from '../locate/units.js';
import { parsing, positiveInt, UsageError } from './args.js';
import { Progress } from './progress.js';

const usage =
  'dike locate [--model <dir|dike-bert-mini|dike-gpt2-mini>] --variant <recipe.yaml|method:key=value,…|none> [--benchmark crows-pairs[,…]] ' +
  '[--unit layer-module|matrix|head] [--data <dir>] [--limit N] [--out <dir>] [--seed N] [--resamples N] [--alpha A] [--no-leave-one-out] ' +
  '[--predict-only] [--top K] [--calibration text] [--quality-lines N] [--threads N] [--json] [--quiet]';

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
  summary: 'where compression moves bias: leave-one-in/-out per layer-module or matrix, first-order prediction',
  usage,
  async run(argv: string[]): Promise<void> {
    const { values } = parsing(usage, () =>
      parseArgs({
        args: argv,
        allowPositionals: false,
        strict: true,
        options: {
          model: { type: 'string' },
          variant: { type: 'string' },
          benchmark: { type: 'string' },
          scorer: { type: 'string' },
          unit: { type: 'string' },
          data: { type: 'string' },
          out: { type: 'string' },
          limit: { type: 'string' },
          seed: { type: 'string' },
          resamples: { type: 'string' },
          alpha: { type: 'string' },
          top: { type: 'string' },
          'no-leave-one-out': { type: 'boolean' },
          'predict-only': { type: 'boolean' },
          calibration: { type: 'string' },
          'quality-lines': { type: 'string' },
          threads: { type: 'string' },
          json: { type: 'boolean' },
          quiet: { type: 'boolean' },
        },
      }),
    );
    if (values.variant === undefined) throw new UsageError(`--variant is required\nusage: ${usage}`);
    const unit = (values.unit ?? 'layer-module') as UnitKind;
    if (!UNIT_KINDS.includes(unit)) throw new UsageError(`--unit expects ${UNIT_KINDS.join(' or ')}, got "${values.unit}" `);
    const model = resolveModel(values.model);
    const dataDir = resolveDataDir(values.data, { embedded: true });
    const seed = values.seed === undefined ? DEFAULT_SEED : Number(values.seed);
    if (!Number.isInteger(seed) || seed < 0) throw new UsageError(`--seed expects a non-negative integer, got "${values.seed}"`);
    const resamples = positiveInt(values.resamples, '--resamples') ?? DEFAULT_RESAMPLES;
    if (resamples < 1000) throw new UsageError('--resamples must be at least 1000 for a 95% interval');
    const alpha = values.alpha === undefined ? 0.05 : Number(values.alpha);
    if (!(alpha > 0 && alpha < 1)) throw new UsageError(`--alpha expects a number in (0, 1), got "${values.alpha}"`);
    const qualityLines = values['quality-lines'] === undefined ? 50 : Number(values['quality-lines']);
    if (!Number.isInteger(qualityLines) || qualityLines < 0) throw new UsageError('--quality-lines expects a non-negative integer');
    const calibration = { file: path.resolve(values.calibration ?? corpusFile('train', dataDir).file), samples: 32, seqLen: 64 };
    const out = values.out ?? 'locate-out';
    const limit = positiveInt(values.limit, '--limit');
    const threads = positiveInt(values.threads, '--threads');
    const top = positiveInt(values.top, '--top');
    const progress = Progress.forCli(values.quiet);
    const results = await runLocate({
      model: model.dir,
      variant: values.variant === 'none' ? { name: 'none', spec: 'none' } : parseVariant(values.variant, calibration, seed),
      benchmarks: (values.benchmark ?? 'crows-pairs').split(',').map((s) => s.trim()).filter((s) => s !== ''),
      ...(values.scorer !== undefined ? { scorer: values.scorer } : {}),
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
      leaveOneOut: values['no-leave-one-out'] !== true,
      predictOnly: values['predict-only'] === true,
      onProgress: (label, d, t) => progress.update(label, d, t),
      log: (l) => {
        if (!values.quiet) process.stderr.write(l + '\n');
      },
    });
    if (values.json) process.stdout.write(JSON.stringify(results, null, 2) + '\n');
    else if (!values.quiet) process.stdout.write(locateTable(results) + `\n\nreport: ${path.join(out, 'report.html')}\nresults: ${path.join(out, 'locate.json')}\n`);
  },
};
