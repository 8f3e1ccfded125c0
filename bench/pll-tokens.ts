/**
 * Cost per token of one masked-copies forward batch vs its size (tokens per ORT call), on one model:
 * the masked copies of one sentence, repeated k times in one batch (k = 1, 2, 4, …), process CPU
 * seconds per token, passes alternating over k (median). Prints a table; writes nothing. It is how
 * the PLL token cap (score/causal.ts DEFAULT_MAX_TOKENS, bench pll rows) was chosen.
 *
 *   npm run build && node dist/bench/pll-tokens.js [--model DIR] [--threads 2] [--len 24] [--ks 1,2,4,8,16] [--passes 3]
 */
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { loadCheckpoint } from '../src/model/checkpoint.js';
import { ModelRunner, gatherRows, padBatch } from '../src/runtime/session.js';
import { maskAndPadIds } from '../src/score/text.js';
import { median } from './dike.js';
import { SHARED, SMALL_BERT } from './machine.js';
import { pickSentences } from './workload.js';

const { values } = parseArgs({
  options: {
    threads: { type: 'string', default: '2' },
    len: { type: 'string', default: '24' },
    ks: { type: 'string', default: '1,2,4,8,16' },
    passes: { type: 'string', default: '3' },
    model: { type: 'string', default: SMALL_BERT },
  },
});
const threads = Number(values.threads);
const len = Number(values.len);
const ks = values.ks!.split(',').map(Number);
const ckpt = loadCheckpoint(values.model!);
const { mask, pad } = maskAndPadIds(ckpt);
const s = pickSentences(path.join(SHARED, 'data', 'lm_corpus', 'valid.txt'), ckpt.tokenizer, 1, len, len)[0]!;
const runner = await ModelRunner.create(ckpt, { threads });
const H = runner.hiddenSize;

async function once(k: number): Promise<{ cpu: number; wall: number; tokens: number }> {
  const rows: number[][] = [];
  const at: [number, number][] = [];
  const targets: number[] = [];
  for (let r = 0; r < k; r++) {
    for (const p of s.positions) {
      const copy = s.ids.slice();
      copy[p] = mask;
      at.push([rows.length, p]);
      targets.push(s.ids[p]!);
      rows.push(copy);
    }
  }
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const batch = padBatch(rows, pad);
  const [last] = await runner.hidden(batch, [runner.numLayers]);
  await runner.logprobs(gatherRows(last!, batch.seq, H, at), targets);
  const cu = process.cpuUsage(c0);
  return { cpu: (cu.user + cu.system) / 1e6, wall: (performance.now() - t0) / 1000, tokens: rows.length * s.ids.length };
}

for (const k of ks) await once(k); // warm-up
const res = new Map<number, { cpu: number[]; wall: number[]; tokens: number }>();
for (let p = 0; p < Number(values.passes); p++) {
  for (const k of p % 2 === 0 ? ks : ks.slice().reverse()) {
    const r = await once(k);
    const e = res.get(k) ?? { cpu: [], wall: [], tokens: r.tokens };
    e.cpu.push(r.cpu / r.tokens);
    e.wall.push(r.wall / r.tokens);
    res.set(k, e);
  }
}
console.log(`${path.basename(values.model!)}, sentence of ${s.ids.length} tokens (${s.positions.length} copies), ${threads} thread(s)`);
console.log('| copies of the sentence k | tokens per call | CPU µs/token | wall µs/token |');
console.log('|---:|---:|---:|---:|');
for (const k of ks) {
  const e = res.get(k)!;
  console.log(`| ${k} | ${e.tokens} | ${(1e6 * median(e.cpu)).toFixed(1)} | ${(1e6 * median(e.wall)).toFixed(1)} |`);
}
await runner.dispose();
