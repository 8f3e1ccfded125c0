import { renameSync, writeFileSync } from 'node:fs';
import { DikeError } from '../errors.js';
import { loadCheckpoint } from '../model/checkpoint.js';
import { ModelRunner } from '../runtime/session.js';
import { resolveDataDir } from '../measure/data.js';
import { resolveModelArg } from '../testbed/testbed.js';
import { BENCHMARKS, benchmarkChoices } from '../measure/registry.js';
import { measure, planMeasure, type MeasureReport } from '../measure/run.js';
import type { ScoreCI } from '../measure/types.js';
import { Progress } from './progress.js';
import { parseFlags, type CommandSpec } from './flags.js';
import { DATA_FLAG, EXECUTION_FLAG, LIMIT_FLAG, RESAMPLES_FLAG, SEED_FLAG, THREADS_FLAG } from './common-flags.js';

const spec: CommandSpec = {
  name: 'measure',
  summary: `bias benchmarks with 95% bootstrap intervals (${BENCHMARKS.map((b) => b.name).join(', ')})`,
  positionals: { usage: '[<model-dir>|dike-bert-mini|dike-gpt2-mini|testbed:NAME]', min: 0, max: 1, help: 'the model (default dike-bert-mini)' },
  flags: {
    benchmark: { type: 'list', choices: benchmarkChoices(), default: 'crows-pairs', help: 'benchmarks to run' },
    scorer: { type: 'string', value: '<name>', help: `how items are scored (${BENCHMARKS.map((b) => `${b.name}: ${Object.keys(b.scorers).join("|")}`).join('; ')})` },
    data: DATA_FLAG,
    json: { type: 'boolean', help: 'print the report as JSON' },
    out: { type: 'string', value: '<file>', help: 'also write the JSON report to a file' },
    limit: LIMIT_FLAG,
    seed: SEED_FLAG,
    resamples: RESAMPLES_FLAG,
    threads: THREADS_FLAG,
    execution: EXECUTION_FLAG,
    quiet: { type: 'boolean', help: 'no progress bar' },
  },
};

function fmt(x: number): string {
  return Number.isFinite(x) ? x.toFixed(2) : 'n/a';
}

function ciRow(name: string, s: ScoreCI, indent = '  '): string {
  return `${indent}${name.padEnd(32 - indent.length)} ${fmt(s.score).padStart(8)}  [${fmt(s.ci95[0])}, ${fmt(s.ci95[1])}]  n=${s.n}`;
}

export function formatReport(r: MeasureReport): string {
  const out: string[] = [`${r.model.architecture} ${r.model.dir}  (dike ${r.version})`];
  for (const res of r.results) {
    out.push('', `${res.benchmark} — ${res.scorer}: ${res.metric}`, ciRow('all', res));
    for (const [g, s] of Object.entries(res.groups)) out.push(ciRow(g, s, '    '));
    const extras = Object.entries(res.extra).filter(([k]) => !k.includes('/'));
    for (const [k, v] of extras) out.push(typeof v === 'number' ? `  ${k.padEnd(30)} ${fmt(v).padStart(8)}` : ciRow(k, v));
  }
  out.push('', '95% intervals: percentile bootstrap over items.');
  return out.join('\n');
}

export const measureCommand = {
  spec,
  async run(argv: string[]): Promise<void> {
    const args = parseFlags(spec, argv);
    const benchmarks = args.list('benchmark')!;
    const seed = args.num('seed');
    const limit = args.num('limit');
    const resamples = args.num('resamples');
    const threads = args.num('threads');
    const execution = args.str('execution') as 'simulated' | 'deployed';
    const scorer = args.str('scorer');
    const out = args.str('out');
    const dataDir = resolveDataDir(args.str('data'), { embedded: true });
    const ckpt = loadCheckpoint((await resolveModelArg(args.positionals[0], { log: (l) => process.stderr.write(l + '\n') })).dir);
    const request = {
      benchmarks,
      dataDir,
      ...(scorer !== undefined ? { scorer } : {}),
      ...(seed !== undefined ? { seed } : {}),
      ...(resamples !== undefined ? { resamples } : {}),
      ...(limit !== undefined ? { limit } : {}),
    };
    planMeasure(ckpt, request); // fail on a bad name before loading the runtime
    const progress = Progress.forCli(args.bool('quiet'));
    const runner = await ModelRunner.create(ckpt, { execution, ...(threads !== undefined ? { threads } : {}) });
    let report: MeasureReport;
    try {
      report = await measure(ckpt, runner, { ...request, onProgress: (b, d, t) => progress.update(b, d, t) });
    } finally {
      await runner.dispose();
    }
    const json = JSON.stringify(report, null, 2) + '\n';
    if (out !== undefined) {
      const tmp = `${out}.tmp-${process.pid}`;
      try {
        writeFileSync(tmp, json);
        renameSync(tmp, out);
      } catch (e) {
        throw new DikeError(out, '', `cannot write: ${(e as Error).message}`);
      }
    }
    process.stdout.write(args.bool('json') ? json : formatReport(report) + '\n');
  },
};
