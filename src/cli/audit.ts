import { parseArgs } from 'node:util';
import path from 'node:path';
import { corpusFile, embeddedDataDir, resolveModel } from '../embedded.js';
import { resolveDataDir } from '../measure/data.js';
import { parseVariant, runAudit, sweepVariants, type VariantSpec } from '../audit/audit.js';
import type { AuditResults } from '../audit/types.js';
import { DEFAULT_RESAMPLES, DEFAULT_SEED } from '../measure/stats/bootstrap.js';
import { parsing, positiveInt, UsageError } from './args.js';
import { Progress } from './progress.js';
import { readFileSync, writeFileSync } from 'node:fs';
import { runLocate, type LocateResults } from '../locate/locate.js';
import { withLocateSections } from '../locate/report.js';
import { storePath } from '../audit/store.js';

const usage =
  'dike audit [--model <dir|dike-bert-mini|dike-gpt2-mini>] (--variant <recipe.yaml|method:key=value,…|compressed-dir>)… [--sweep "magnitude:0.1,0.3,0.5"]… ' +
  '[--benchmark <names>] [--scorer <name>] [--data <dir>] --out <dir> [--limit N] [--seed N] [--resamples N] [--alpha A] ' +
  '[--calibration text] [--calibration-samples N] [--calibration-seq-len N] [--quality-lines N] [--threads N] [--locate] [--json] [--quiet]';

function fmt(x: number, d = 2): string {
  return Number.isFinite(x) ? x.toFixed(d) : 'n/a';
}

export function summaryTable(r: AuditResults, color: boolean): string {
  const bold = (s: string): string => (color ? `\x1b[1;31m${s}\x1b[0m` : s);
  const lines: string[] = [];
  for (const b of r.benchmarks) {
    lines.push('', `${b.benchmark} (${b.scorer}) — dense ${fmt(b.dense.overall.score)} [${fmt(b.dense.overall.ci95[0])}, ${fmt(b.dense.overall.ci95[1])}]`);
    lines.push(`  ${'variant'.padEnd(28)} ${'score'.padStart(8)} ${'Δ'.padStart(8)}  ${'Δ 95% CI'.padEnd(18)} ${'p'.padStart(7)}  flips  significant groups (Holm)`);
    for (const v of b.variants) {
      const sig = Object.entries(v.groups).filter(([, c]) => c.significant).map(([g, c]) => `${g} ${c.delta > 0 ? '+' : ''}${fmt(c.delta, 1)}`);
      const up = v.overall.significant && v.overall.delta > 0;
      const row = `  ${v.variant.padEnd(28)} ${fmt(v.overall.score.score).padStart(8)} ${fmt(v.overall.delta).padStart(8)}  ${`[${fmt(v.overall.deltaCi95[0])}, ${fmt(v.overall.deltaCi95[1])}]`.padEnd(18)} ${(v.overall.p < 0.001 ? '<0.001' : fmt(v.overall.p, 3)).padStart(7)}  ${String(v.flips.total).padStart(5)}  ${sig.join(', ') || '—'}`;
      lines.push(up ? bold(row) : row);
    }
  }
  return lines.join('\n');
}

export const auditCommand = {
  summary: 'dense vs compressed: bias benchmarks paired item by item, CIEs, resumable store, report.html',
  usage,
  async run(argv: string[]): Promise<void> {
    const { values } = parsing(usage, () =>
      parseArgs({
        args: argv,
        allowPositionals: false,
        strict: true,
        options: {
          model: { type: 'string' },
          variant: { type: 'string', multiple: true },
          sweep: { type: 'string', multiple: true },
          benchmark: { type: 'string' },
          scorer: { type: 'string' },
          data: { type: 'string' },
          out: { type: 'string' },
          limit: { type: 'string' },
          seed: { type: 'string' },
          resamples: { type: 'string' },
          alpha: { type: 'string' },
          calibration: { type: 'string' },
          'calibration-samples': { type: 'string' },
          'calibration-seq-len': { type: 'string' },
          'quality-lines': { type: 'string' },
          threads: { type: 'string' },
          locate: { type: 'boolean' },
          json: { type: 'boolean' },
          quiet: { type: 'boolean' },
        },
      }),
    );
    if (values.out === undefined) throw new UsageError(`--out is required\nusage: ${usage}`);
    if ((values.variant ?? []).length + (values.sweep ?? []).length === 0) throw new UsageError(`give at least one --variant or --sweep\nusage: ${usage}`);
    const model = resolveModel(values.model);
    const dataDir = resolveDataDir(values.data, { embedded: true });
    const embeddedData = path.resolve(dataDir) === path.resolve(embeddedDataDir());
    const say = (l: string): void => {
      if (!values.quiet) process.stderr.write(l + '\n');
    };
    if (model.embedded) say(`model: Dikē's embedded ${path.basename(model.dir)} (${model.dir})`);
    if (embeddedData) say(`data: the embedded CrowS-Pairs, StereoSet (intrasentence) and lm_corpus excerpt (pass --data <dir> or set DIKE_DATA for the other benchmarks and the full corpus)`);
    const benchmark = values.benchmark ?? 'crows-pairs';
    const seed = values.seed === undefined ? DEFAULT_SEED : Number(values.seed);
    if (!Number.isInteger(seed) || seed < 0) throw new UsageError(`--seed expects a non-negative integer, got "${values.seed}"`);
    const resamples = positiveInt(values.resamples, '--resamples') ?? DEFAULT_RESAMPLES;
    if (resamples < 1000) throw new UsageError('--resamples must be at least 1000 for a 95% interval');
    const alpha = values.alpha === undefined ? 0.05 : Number(values.alpha);
    if (!(alpha > 0 && alpha < 1)) throw new UsageError(`--alpha expects a number in (0, 1), got "${values.alpha}"`);
    const trainText = corpusFile('train', dataDir);
    const calibration = {
      file: path.resolve(values.calibration ?? trainText.file),
      samples: positiveInt(values['calibration-samples'], '--calibration-samples') ?? 32,
      seqLen: positiveInt(values['calibration-seq-len'], '--calibration-seq-len') ?? 64,
    };
    const variants: VariantSpec[] = [
      ...(values.sweep ?? []).flatMap((s) => sweepVariants(s, calibration, seed)),
      ...(values.variant ?? []).map((v) => parseVariant(v, calibration, seed)),
    ];
    const qualityLines = values['quality-lines'] === undefined ? 50 : Number(values['quality-lines']);
    if (!Number.isInteger(qualityLines) || qualityLines < 0) throw new UsageError(`--quality-lines expects a non-negative integer`);
    const qualityText = corpusFile('valid', dataDir);
    if (values.calibration === undefined && trainText.fallback) say(`calibration text: ${dataDir} has no lm_corpus/train.txt; using the embedded excerpt`);
    if (qualityLines > 0 && qualityText.fallback) say(`quality proxy: ${dataDir} has no lm_corpus/valid.txt; using the embedded excerpt`);
    const progress = Progress.forCli(values.quiet);
    const threads = positiveInt(values.threads, '--threads');
    const limit = positiveInt(values.limit, '--limit');
    const results = await runAudit({
      model: model.dir,
      variants,
      benchmarks: benchmark.split(',').map((s) => s.trim()).filter((s) => s !== ''),
      ...(values.scorer !== undefined ? { scorer: values.scorer } : {}),
      dataDir,
      out: values.out,
      seed,
      resamples,
      alpha,
      ...(limit !== undefined ? { limit } : {}),
      ...(threads !== undefined ? { threads } : {}),
      qualityLines,
      qualityFile: qualityText.file,
      onProgress: (label, d, t) => progress.update(label, d, t),
      log: say,
    });
    // --locate: `dike locate` (layer-module units) for every variant given as a recipe or method spec,
    // sharing the audit's store, written under <out>/locate/<variant>/ and added to report.html.
    const located: LocateResults[] = [];
    if (values.locate) {
      for (const v of variants.filter((x) => x.recipe !== undefined)) {
        located.push(
          await runLocate({
            model: model.dir,
            variant: v,
            benchmarks: benchmark.split(',').map((s) => s.trim()).filter((s) => s !== ''),
            ...(values.scorer !== undefined ? { scorer: values.scorer } : {}),
            dataDir,
            out: path.join(values.out, 'locate', v.name),
            storeFile: storePath(values.out),
            unit: 'layer-module',
            seed,
            resamples,
            alpha,
            ...(limit !== undefined ? { limit } : {}),
            ...(threads !== undefined ? { threads } : {}),
            qualityLines,
            qualityFile: qualityText.file,
            onProgress: (label, d, t) => progress.update(`locate ${label}`, d, t),
            log: say,
          }),
        );
      }
      const report = path.join(values.out, 'report.html');
      writeFileSync(report, withLocateSections(readFileSync(report, 'utf8'), located));
    }
    if (values.json) process.stdout.write(JSON.stringify(located.length > 0 ? { ...results, locate: located } : results, null, 2) + '\n');
    else if (!values.quiet) {
      process.stdout.write(summaryTable(results, process.stdout.isTTY === true) + `\n\nreport: ${path.join(values.out, 'report.html')}\nresults: ${path.join(values.out, 'results.json')}\n`);
    }
  },
};
