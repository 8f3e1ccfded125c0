import { parseArgs } from 'node:util';
import { renameSync, writeFileSync } from 'node:fs';
import { DikeError } from '../errors.js';
import { loadCheckpoint } from '../model/checkpoint.js';
import { ModelRunner } from '../runtime/session.js';
import { resolveDataDir } from '../measure/data.js';
import { resolveModel } from '../embedded.js';
import { BENCHMARKS } from '../measure/registry.js';
import { measure, planMeasure, type MeasureReport } from '../measure/run.js';
import type { ScoreCI } from '../measure/types.js';
import { executionFlag, parsing, positiveInt, UsageError } from './args.js';
import { Progress } from './progress.js';

const usage =
  'dike measure [<model-dir>|dike-bert-mini|dike-gpt2-mini] [--benchmark <name>[,<name>…] (default crows-pairs)] [--scorer <name>] [--data <dir>] [--json] [--out <file>] ' +
  '[--limit N] [--seed N] [--resamples N] [--threads N] [--execution simulated|deployed] [--quiet]';

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
  summary: `bias benchmarks with 95% bootstrap intervals (${BENCHMARKS.map((b) => b.name).join(', ')})`,
  usage,
  async run(argv: string[]): Promise<void> {
    const { values, positionals } = parsing(usage, () =>
      parseArgs({
        args: argv,
        allowPositionals: true,
        strict: true,
        options: {
          benchmark: { type: 'string' },
          scorer: { type: 'string' },
          data: { type: 'string' },
          json: { type: 'boolean' },
          out: { type: 'string' },
          limit: { type: 'string' },
          seed: { type: 'string' },
          resamples: { type: 'string' },
          threads: { type: 'string' },
          execution: { type: 'string' },
          quiet: { type: 'boolean' },
        },
      }),
    );
    if (positionals.length > 1) throw new UsageError(`expected at most one model directory\nusage: ${usage}`);
    const benchmarks = (values.benchmark ?? 'crows-pairs').split(',').map((s) => s.trim()).filter((s) => s !== '');
    const seed = values.seed === undefined ? undefined : Number(values.seed);
    if (seed !== undefined && (!Number.isInteger(seed) || seed < 0)) throw new UsageError(`--seed expects a non-negative integer, got "${values.seed}"`);
    const limit = positiveInt(values.limit, '--limit');
    const resamples = positiveInt(values.resamples, '--resamples');
    const threads = positiveInt(values.threads, '--threads');
    const execution = executionFlag(values.execution);
    const dataDir = resolveDataDir(values.data, { embedded: true });
    const ckpt = loadCheckpoint(resolveModel(positionals[0]).dir);
    const request = {
      benchmarks,
      dataDir,
      ...(values.scorer !== undefined ? { scorer: values.scorer } : {}),
      ...(seed !== undefined ? { seed } : {}),
      ...(resamples !== undefined ? { resamples } : {}),
      ...(limit !== undefined ? { limit } : {}),
    };
    planMeasure(ckpt, request); // fail on a bad name before loading the runtime
    const progress = Progress.forCli(values.quiet);
    const runner = await ModelRunner.create(ckpt, { execution, ...(threads !== undefined ? { threads } : {}) });
    let report: MeasureReport;
    try {
      report = await measure(ckpt, runner, { ...request, onProgress: (b, d, t) => progress.update(b, d, t) });
    } finally {
      await runner.dispose();
    }
    const json = JSON.stringify(report, null, 2) + '\n';
    if (values.out !== undefined) {
      const tmp = `${values.out}.tmp-${process.pid}`;
      try {
        writeFileSync(tmp, json);
        renameSync(tmp, values.out);
      } catch (e) {
        throw new DikeError(values.out, '', `cannot write: ${(e as Error).message}`);
      }
    }
    process.stdout.write(values.json ? json : formatReport(report) + '\n');
  },
};
