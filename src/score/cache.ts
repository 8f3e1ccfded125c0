/**
 * Memoised scoring for benchmarks: the same (sequence, position) or (context, continuation) is
 * computed once per run, and all requests of one call are batched together. StereoSet and
 * CrowS-Pairs share work this way across the sentences of a pair or cluster.
 */
import type { ModelRunner } from '../runtime/session.js';
import { causalTokenLogprobs, type CausalJob, type ScoreOptions } from './causal.js';
import { maskedTokenLogprobs, type MaskedJob } from './masked.js';

export class ScoreCache {
  private masked = new Map<string, number>();
  private causal = new Map<string, Float32Array>();

  constructor(
    private readonly runner: ModelRunner,
    private readonly ids: { bos?: number; mask?: number; pad?: number },
    private readonly opts: ScoreOptions = {},
  ) {}

  /** For each job, log P(ids[p]) with position p masked alone, for each p in job.positions. */
  async maskedLogprobs(jobs: readonly MaskedJob[]): Promise<Float64Array[]> {
    const { mask, pad } = this.ids;
    if (mask === undefined) throw new Error('ScoreCache: masked scoring needs a mask id');
    const todo = new Map<string, { ids: readonly number[]; positions: Set<number> }>();
    for (const j of jobs) {
      const key = j.ids.join(',');
      for (const p of j.positions) {
        if (this.masked.has(`${key}@${p}`)) continue;
        let t = todo.get(key);
        if (!t) todo.set(key, (t = { ids: j.ids, positions: new Set() }));
        t.positions.add(p);
      }
    }
    const pending = [...todo.entries()].map(([key, t]) => ({ key, ids: t.ids, positions: [...t.positions].sort((a, b) => a - b) }));
    if (pending.length > 0) {
      const out = await maskedTokenLogprobs(this.runner, mask, pad ?? 0, pending, this.opts);
      pending.forEach((t, i) => t.positions.forEach((p, j) => this.masked.set(`${t.key}@${p}`, out[i]![j]!)));
    }
    return jobs.map((j) => {
      const key = j.ids.join(',');
      return Float64Array.from(j.positions, (p) => this.masked.get(`${key}@${p}`)!);
    });
  }

  /** For each job, log P(ids[k] | context, ids[<k]) for every k (context default [BOS]). */
  async causalLogprobs(jobs: readonly CausalJob[]): Promise<Float32Array[]> {
    const { bos } = this.ids;
    const keyOf = (j: CausalJob): string => `${(j.context ?? [bos]).join(',')}|${j.ids.join(',')}`;
    const pending = new Map<string, CausalJob>();
    for (const j of jobs) {
      const k = keyOf(j);
      if (!this.causal.has(k) && !pending.has(k)) pending.set(k, j);
    }
    if (pending.size > 0) {
      if (bos === undefined && [...pending.values()].some((j) => j.context === undefined)) throw new Error('ScoreCache: causal scoring needs a BOS id');
      const list = [...pending.entries()];
      const out = await causalTokenLogprobs(this.runner, bos ?? 0, list.map(([, j]) => j), this.opts);
      list.forEach(([k], i) => this.causal.set(k, out[i]!));
    }
    return jobs.map((j) => this.causal.get(keyOf(j))!);
  }
}
