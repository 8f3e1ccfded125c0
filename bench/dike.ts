/**
 * The Dikē side of the benchmark: one pass over a case's batches through the library's public
 * runtime and scoring API, exactly as a user would call it.
 */
import { performance } from 'node:perf_hooks';
import { ModelRunner, padBatch } from '../src/runtime/session.js';
import { maskedTokenLogprobs } from '../src/score/masked.js';
import { checksumPositions, type Case, type Checksum, type ModelWorkload } from './workload.js';

export interface PassResult {
  /** Seconds for the whole pass. */
  time: number;
  /** Process CPU seconds of the pass, all threads (less sensitive to other load than `time`). */
  cpu: number;
  /** PyTorch only: peak resident memory of its process so far, KiB. */
  maxRssKiB?: number;
  /** Only when asked for; its accumulation is inside the timed region, so ask in warm-up passes. */
  checksum: Checksum | null;
}

export async function dikePass(runner: ModelRunner, w: ModelWorkload, c: Case, withChecksum: boolean): Promise<PassResult> {
  const check: Checksum | null = withChecksum ? { sum: 0, scale: 0 } : null;
  const V = runner.model.shape.outputSize;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (const group of c.groups) {
    const sentences = group.map((i) => w.sentences[i]!);
    if (c.kind === 'forward-real') {
      const batch = padBatch(
        sentences.map((s) => s.ids),
        w.padId,
      );
      const logits = await runner.tokenLogits(batch);
      if (check) {
        let off = 0;
        for (const s of sentences) {
          for (const p of checksumPositions(s.ids.length)) {
            const row = logits.subarray((off + p) * V, (off + p + 1) * V);
            for (let v = 0; v < V; v++) {
              check.sum += row[v]!;
              check.scale += Math.abs(row[v]!);
            }
          }
          off += s.ids.length;
        }
      }
    } else if (c.kind === 'forward') {
      const batch = padBatch(
        sentences.map((s) => s.ids),
        w.padId,
      );
      const [last] = await runner.hidden(batch, [runner.numLayers]);
      const logits = await runner.logits(last!, batch.batch * batch.seq);
      if (check) {
        sentences.forEach((s, r) => {
          for (const p of checksumPositions(s.ids.length)) {
            const row = logits.subarray((r * batch.seq + p) * V, (r * batch.seq + p + 1) * V);
            for (let v = 0; v < V; v++) {
              check.sum += row[v]!;
              check.scale += Math.abs(row[v]!);
            }
          }
        });
      }
    } else {
      // One call per group, with the default token cap (MASKED_MAX_TOKENS), as a user calls it.
      const lps = await maskedTokenLogprobs(runner, w.maskId, w.padId, sentences);
      if (check) {
        for (const lp of lps) {
          for (let i = 0; i < lp.length; i++) {
            check.sum += lp[i]!;
            check.scale += Math.abs(lp[i]!);
          }
        }
      }
    }
  }
  const time = (performance.now() - t0) / 1000;
  const cu = process.cpuUsage(c0);
  return { time, cpu: (cu.user + cu.system) / 1e6, checksum: check };
}

export function median(xs: readonly number[]): number {
  const s = xs.slice().sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
