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

/**
 * A benchmark by name; `<name>@even` / `<name>@odd` is the half of a benchmark with `halves` whose items
 * sit at even / odd positions (0-based, file order): a testbed trained on one half is audited on the
 * other, which no training step saw.
 */
export function findBenchmark(name: string): Benchmark | undefined {
  const at = name.lastIndexOf('@');
  if (at < 0) return BENCHMARKS.find((b) => b.name === name);
  const base = BENCHMARKS.find((b) => b.name === name.slice(0, at));
  const half = name.slice(at + 1);
  if (base === undefined || base.halves !== true || (half !== 'even' && half !== 'odd')) return undefined;
  const { objective } = base;
  return {
    ...base,
    name,
    description: `${base.description}; only the items at ${half} positions (0-based, file order)`,
    run: async (ctx, opts) => ({ ...(await base.run(ctx, { ...opts, half })), benchmark: name }),
    ...(objective !== undefined ? { objective: (ctx, opts) => objective.call(base, ctx, { ...opts, half }) } : {}),
  };
}

/** Every name --benchmark accepts: the benchmarks, then the halves of those that have them. */
export function benchmarkChoices(): string[] {
  return [...BENCHMARKS.map((b) => b.name), ...BENCHMARKS.filter((b) => b.halves === true).flatMap((b) => [`${b.name}@even`, `${b.name}@odd`])];
}

/** Whether scoring `scored` reuses items of `seen` (a benchmark or a half of one). */
export function itemsOverlap(seen: string, scored: string): boolean {
  const [sb, sh] = seen.split('@');
  const [cb, ch] = scored.split('@');
  return sb === cb && (sh === undefined || ch === undefined || sh === ch);
}

/** Every dataset a benchmark reads, by name (for `dike data fetch`). */
export function datasets(): Dataset[] {
  const m = new Map<string, Dataset>();
  for (const b of BENCHMARKS) m.set(b.dataset.name, b.dataset);
  return [...m.values()];
}
