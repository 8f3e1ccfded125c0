import path from 'node:path';
import { corpusFile, embeddedDataDir } from '../embedded.js';
import { resolveModelArg } from '../testbed/testbed.js';
import { resolveDataDir } from '../measure/data.js';
import { parseVariant, runAudit, sweepVariants, type AuditRequest, type VariantSpec } from '../audit/audit.js';
import type { AuditResults } from '../audit/types.js';
import { DEFAULT_RESAMPLES, DEFAULT_SEED } from '../measure/stats/bootstrap.js';
import { DikeError } from '../errors.js';
import { readFileSync, writeFileSync } from 'node:fs';
import { runLocate, type LocateResults } from '../locate/locate.js';
import { withLocateSections } from '../locate/report.js';
import { storePath } from '../audit/store.js';
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
import { BENCHMARKS, benchmarkChoices } from '../measure/registry.js';
import { MAX_CALIBRATION_SAMPLES, MAX_CALIBRATION_SEQ_LEN } from '../compress/calibration-types.js';

const spec: CommandSpec = {
  name: 'audit',
  summary: 'dense vs compressed: bias benchmarks paired item by item, CIEs, resumable store, report.html',
  flags: {
    model: DENSE_MODEL_FLAG,
    variant: { type: 'string', value: '<recipe.yaml|method:key=value,…|compressed-dir>', multiple: true, help: 'a compressed variant' },
    sweep: { type: 'string', value: '"magnitude:0.1,0.3,0.5"', multiple: true, help: "one variant per value of a method's main knob" },
    benchmark: { type: 'list', choices: benchmarkChoices(), default: 'crows-pairs', help: 'benchmarks to run' },
    scorer: SCORER_FLAG,
    data: DATA_FLAG,
    out: { type: 'string', value: '<dir>', required: true, help: 'report.html, results.json, dike.sqlite and variants/ go here (resumable)' },
    limit: LIMIT_FLAG,
    seed: { ...SEED_FLAG, default: DEFAULT_SEED },
    resamples: { ...RESAMPLES_FLAG, default: DEFAULT_RESAMPLES },
    alpha: { ...ALPHA_FLAG, help: 'significance level (Holm–Bonferroni across groups)' },
    calibration: CALIBRATION_TEXT_FLAG,
    'calibration-samples': { type: 'int', min: 1, max: MAX_CALIBRATION_SAMPLES, default: VARIANT_CALIBRATION.samples, help: 'calibration sequences' },
    'calibration-seq-len': { type: 'int', min: 4, max: MAX_CALIBRATION_SEQ_LEN, default: VARIANT_CALIBRATION.seqLen, help: 'tokens per calibration sequence' },
    'quality-lines': QUALITY_LINES_FLAG,
    threads: THREADS_FLAG,
    locate: { type: 'boolean', help: 'also run dike locate (layer-module units) for every recipe or method variant; adds its section to report.html' },
    json: { type: 'boolean', help: 'print results.json to stdout' },
    quiet: { type: 'boolean', help: 'no progress or summary' },
  },
  notes: ['Give at least one --variant or --sweep.'],
};

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
  spec,
  async run(argv: string[]): Promise<void> {
    // Everything is validated before anything is printed or computed.
    const args = parseFlags(spec, argv);
    const out = args.str('out')!;
    const quiet = args.bool('quiet');
    if (args.all('variant').length + args.all('sweep').length === 0) throw args.error('--variant/--sweep', 'give at least one --variant or --sweep');
    const model = (await resolveModelArg(args.str('model'), { log: (l) => process.stderr.write(l + '\n') }));
    const dataDir = resolveDataDir(args.str('data'), { embedded: true });
    const embeddedData = path.resolve(dataDir) === path.resolve(embeddedDataDir());
    const seed = args.num('seed')!;
    const resamples = args.num('resamples')!;
    const alpha = args.num('alpha')!;
    const calibrationFile = args.str('calibration');
    const trainText = corpusFile('train', dataDir);
    const calibration = {
      file: path.resolve(calibrationFile ?? trainText.file),
      samples: args.num('calibration-samples')!,
      seqLen: args.num('calibration-seq-len')!,
    };
    // A method spec becomes a one-step recipe named "variant.json": report its problems against the flag.
    const asFlag = <T>(flag: string, spec: string, f: () => T): T => {
      try {
        return f();
      } catch (e) {
        if (e instanceof DikeError && e.file === 'variant.json') throw args.error(flag, `"${spec}": ${[e.place, e.problem].filter((x) => x !== '').join(': ')}`);
        throw e;
      }
    };
    const variants: VariantSpec[] = [
      ...args.all('sweep').flatMap((s) => asFlag('--sweep', s, () => sweepVariants(s, calibration, seed))),
      ...args.all('variant').map((v) => asFlag('--variant', v, () => parseVariant(v, calibration, seed))),
    ];
    const qualityText = corpusFile('valid', dataDir);
    const qualityLines = args.num('quality-lines')!;
    const threads = args.num('threads');
    const limit = args.num('limit');
    const benchmarks = args.list('benchmark')!;
    const scorer = args.str('scorer');
    const say = (l: string): void => {
      if (!quiet) process.stderr.write(l + '\n');
    };
    if (model.embedded) say(`model: Dikē's embedded ${path.basename(model.dir)} (${model.dir})`);
    if (embeddedData) say(`data: the embedded CrowS-Pairs, StereoSet (intrasentence) and lm_corpus excerpt (pass --data <dir> or set DIKE_DATA for the other benchmarks and the full corpus)`);
    if (calibrationFile === undefined && trainText.fallback) say(`calibration text: ${dataDir} has no lm_corpus/train.txt; using the embedded excerpt`);
    if (qualityLines > 0 && qualityText.fallback) say(`quality proxy: ${dataDir} has no lm_corpus/valid.txt; using the embedded excerpt`);
    const progress = Progress.forCli(quiet);
    const request: Omit<AuditRequest, 'variants'> = {
      model: model.dir,
      benchmarks,
      ...(scorer !== undefined ? { scorer } : {}),
      dataDir,
      out,
      seed,
      resamples,
      alpha,
      ...(limit !== undefined ? { limit } : {}),
      ...(threads !== undefined ? { threads } : {}),
      qualityLines,
      qualityFile: qualityText.file,
      onProgress: (label, d, t) => progress.update(label, d, t),
      log: say,
    };
    const results = await runAudit({ ...request, variants });
    // Overlap warnings are printed even with --quiet (the log above prints them otherwise).
    if (quiet) for (const w of results.warnings ?? []) process.stderr.write(w + '\n');
    // --locate: `dike locate` (layer-module units) for every variant given as a recipe or method spec,
    // sharing the audit's store, written under <out>/locate/<variant>/ and added to report.html.
    const located: LocateResults[] = [];
    if (args.bool('locate')) {
      for (const v of variants.filter((x) => x.recipe !== undefined)) {
        located.push(
          await runLocate({
            ...request,
            variant: v,
            out: path.join(out, 'locate', v.name),
            storeFile: storePath(out),
            unit: 'layer-module',
            onProgress: (label, d, t) => progress.update(`locate ${label}`, d, t),
          }),
        );
      }
      const report = path.join(out, 'report.html');
      writeFileSync(report, withLocateSections(readFileSync(report, 'utf8'), located));
    }
    if (args.bool('json')) process.stdout.write(JSON.stringify(located.length > 0 ? { ...results, locate: located } : results, null, 2) + '\n');
    else if (!quiet) {
      process.stdout.write(summaryTable(results, process.stdout.isTTY === true) + `\n\nreport: ${path.join(out, 'report.html')}\nresults: ${path.join(out, 'results.json')}\n`);
    }
  },
};
