/**
 * Run benchmarks on a model: resolve scorers, run each benchmark, and wrap the results with what a
 * reader needs to reproduce them (tool version, model, seed, resamples, data checksums).
 */
import { DikeError } from '../errors.js';
import type { Checkpoint } from '../model/checkpoint.js';
import type { ModelRunner } from '../runtime/session.js';
import { dikeVersion } from '../version.js';
import { BENCHMARKS, findBenchmark } from './registry.js';
import { DEFAULT_RESAMPLES, DEFAULT_SEED } from './stats/bootstrap.js';
import type { Benchmark, BenchmarkResult } from './types.js';

export interface MeasureRequest {
  benchmarks: readonly string[];
  /** Scorer name; applies to every benchmark that has a scorer of that name. */
  scorer?: string;
  dataDir: string;
  seed?: number;
  resamples?: number;
  limit?: number;
  onProgress?: (benchmark: string, done: number, total: number) => void;
}

export interface MeasureReport {
  tool: 'dike';
  version: string;
  model: { dir: string; architecture: string; task: string };
  results: BenchmarkResult[];
}

/** Check names and scorers before any work starts, so a typo fails in the first second. */
export function planMeasure(ckpt: Checkpoint, req: MeasureRequest): { benchmark: Benchmark; scorer: string }[] {
  return req.benchmarks.map((name) => {
    const benchmark = findBenchmark(name);
    if (benchmark === undefined) {
      throw new DikeError('', '--benchmark', `unknown benchmark "${name}" (available: ${BENCHMARKS.map((b) => b.name).join(', ')})`);
    }
    const scorer = req.scorer ?? benchmark.defaultScorer(ckpt.task);
    if (scorer === undefined) throw new DikeError('', name, `no scorer for a ${ckpt.task} model (${ckpt.hfClass})`);
    const spec = benchmark.scorers[scorer];
    if (spec === undefined) {
      throw new DikeError('', '--scorer', `${name} has no scorer "${scorer}" (available: ${Object.keys(benchmark.scorers).join(', ')})`);
    }
    if (!spec.tasks.includes(ckpt.task)) {
      throw new DikeError('', '--scorer', `${name} scorer "${scorer}" is for ${spec.tasks.join('/')} models, not ${ckpt.task} (${ckpt.hfClass})`);
    }
    return { benchmark, scorer };
  });
}

export async function measure(ckpt: Checkpoint, runner: ModelRunner, req: MeasureRequest): Promise<MeasureReport> {
  const plan = planMeasure(ckpt, req);
  if (req.resamples !== undefined && req.resamples < 1000) {
    throw new DikeError('', '--resamples', `at least 1000 bootstrap resamples are required for a 95% interval, got ${req.resamples}`);
  }
  const results: BenchmarkResult[] = [];
  for (const { benchmark, scorer } of plan) {
    results.push(
      await benchmark.run(
        { ckpt, runner, dataDir: req.dataDir },
        {
          scorer,
          seed: req.seed ?? DEFAULT_SEED,
          resamples: req.resamples ?? DEFAULT_RESAMPLES,
          ...(req.limit !== undefined ? { limit: req.limit } : {}),
          progress: (done, total) => req.onProgress?.(benchmark.name, done, total),
        },
      ),
    );
  }
  // A NaN headline (no item scored, non-finite log-probabilities) is an error, never a result.
  for (const r of results) {
    if (!Number.isFinite(r.score)) {
      throw new DikeError(req.dataDir, r.benchmark, `the ${r.scorer} score is ${r.score} over ${r.n} items (no item could be scored, or the model gives non-finite log-probabilities)`);
    }
  }
  return { tool: 'dike', version: dikeVersion(), model: { dir: ckpt.dir, architecture: ckpt.hfClass, task: ckpt.task }, results };
}
