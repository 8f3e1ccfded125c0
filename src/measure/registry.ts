/** The one place benchmarks are registered: adding a benchmark is one file plus one line here. */
import type { Benchmark, Dataset } from './types.js';
import { crowsPairs } from './crows-pairs.js';
import { stereoset } from './stereoset.js';
import { seat } from './seat.js';
import { winoBias } from './winobias.js';
import { bbq } from './bbq.js';

/** In the order the README and `dike measure --help` list them. */
export const BENCHMARKS: readonly Benchmark[] = [
  crowsPairs,
  stereoset,
  seat,
  winoBias,
  bbq,
];

export function findBenchmark(name: string): Benchmark | undefined {
  return BENCHMARKS.find((b) => b.name === name);
}

/** Every dataset a benchmark reads, by name (for `dike data fetch`). */
export function datasets(): Dataset[] {
  const m = new Map<string, Dataset>();
  for (const b of BENCHMARKS) m.set(b.dataset.name, b.dataset);
  return [...m.values()];
}
