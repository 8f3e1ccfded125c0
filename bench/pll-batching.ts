/**
 * Does batching the pseudo-log-likelihood cost less than one sentence at a time? Process CPU time of
 * Dikē's PLL over the bench's sentences, B sentences per call, two ways: "padded" (a call's masked
 * copies in one batch right-padded to its longest sentence, as maskedTokenLogprobs did before issue 15)
 * and "same-length" (maskedTokenLogprobs as it is: maskedBuckets, no padded row). Passes alternate
 * (ABBA) after one untimed warm-up pass; medians. The sums must be identical in every configuration. Prints a table; writes nothing.
 *
 *   npm run build && node dist/bench/pll-batching.js [--threads 1] [--sentences 32] [--passes 5] [--model DIR]
 */
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { loadCheckpoint } from '../src/model/checkpoint.js';
import { ModelRunner, gatherRows, padBatch } from '../src/runtime/session.js';
import { maskedTokenLogprobs, type MaskedJob } from '../src/score/masked.js';
import { maskAndPadIds } from '../src/score/text.js';
import { median } from './dike.js';
import { SHARED, SMALL_BERT } from './machine.js';
import { pickSentences } from './workload.js';

const { values } = parseArgs({
  options: {
    threads: { type: 'string', default: '1' },
    sentences: { type: 'string', default: '32' },
    passes: { type: 'string', default: '5' },
    model: { type: 'string', default: SMALL_BERT },
  },
});
const threads = Number(values.threads);
const count = Number(values.sentences);
const passes = Number(values.passes);
const ckpt = loadCheckpoint(values.model!);
const { mask, pad } = maskAndPadIds(ckpt);
const sentences = pickSentences(path.join(SHARED, 'data', 'lm_corpus', 'valid.txt'), ckpt.tokenizer, count, 8, 40);
const runner = await ModelRunner.create(ckpt, { threads });

/** The pre-issue-15 batching: all masked copies of the call in one padded batch. */
async function padded(jobs: readonly MaskedJob[]): Promise<Float32Array[]> {
  const rows: number[][] = [];
  const at: [number, number][] = [];
  const targets: number[] = [];
  for (const { ids, positions } of jobs) {
    for (const p of positions) {
      const copy = ids.slice();
      copy[p] = mask;
      at.push([rows.length, p]);
      targets.push(ids[p]!);
      rows.push(copy);
    }
  }
  const batch = padBatch(rows, pad);
  const [last] = await runner.hidden(batch);
  const lp = await runner.logprobs(gatherRows(last!, batch.seq, runner.hiddenSize, at), targets);
  let off = 0;
  return jobs.map((j) => lp.slice(off, (off += j.positions.length)));
}

function sameLength(jobs: readonly MaskedJob[]): Promise<Float32Array[]> {
  return maskedTokenLogprobs(runner, mask, pad, jobs, { maxTokens: Number.POSITIVE_INFINITY });
}

const configs = (['padded', 'same-length'] as const).flatMap((how) => [1, 8, 32].map((B) => ({ how, B })));
const res = configs.map(() => ({ wall: [] as number[], cpu: [] as number[], values: [] as number[] }));
// Pass −1 is an untimed warm-up (session creation of the head, first allocations).
for (let k = -1; k < passes; k++) {
  const order = k % 2 === 0 ? configs.map((_, i) => i) : configs.map((_, i) => configs.length - 1 - i);
  for (const i of order) {
    const { how, B } = configs[i]!;
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    const values: number[] = [];
    for (let s = 0; s < count; s += B) for (const lp of await (how === 'padded' ? padded : sameLength)(sentences.slice(s, s + B))) values.push(...lp);
    const cu = process.cpuUsage(c0);
    if (k < 0) continue;
    res[i]!.wall.push(performance.now() - t0);
    res[i]!.cpu.push((cu.user + cu.system) / 1000);
    res[i]!.values = values;
  }
}
await runner.dispose();
console.log(`${ckpt.dir}: ${count} sentences, ${threads} thread(s), median of ${passes} passes`);
console.log('batching     B   CPU ms   wall ms   Σ log-prob');
configs.forEach(({ how, B }, i) =>
  console.log(`${how.padEnd(12)} ${String(B).padStart(2)} ${median(res[i]!.cpu).toFixed(0).padStart(8)} ${median(res[i]!.wall).toFixed(0).padStart(9)}   ${res[i]!.values.reduce((a, b) => a + b, 0)}`),
);
// Every configuration must give the same log-probability at every (sentence, position), bit for bit.
const differ = res.filter((r) => r.values.length !== res[0]!.values.length || r.values.some((v, k) => v !== res[0]!.values[k])).length;
console.log(differ === 0 ? 'log-probabilities identical in every configuration' : `${differ} configuration(s) differ from the first`);
if (differ > 0) process.exitCode = 1;
