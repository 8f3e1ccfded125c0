/**
 * Where GPTQ's peak resident memory goes: runs the memory bench's GPTQ workload of BERT-base-size
 * (`applyRecipe` in place, 4-bit g128, 128 × 128 tokens) and samples `process.memoryUsage()` every
 * 50 ms, printing a line whenever RSS moves by more than 40 MiB and, at the end, the sample with the
 * highest RSS split into JavaScript ArrayBuffers (the parameters, Grams, Hessians, hidden states) and
 * the rest (node, onnxruntime's sessions and arenas, memory the allocator keeps after a free).
 * Prints only; writes nothing. Samples are missed while JavaScript runs synchronously, so the
 * process's maxRSS (printed too) can be above the highest sample.
 *
 *   npm run build && node dist/bench/memory-trace.js [sequential|one-shot] [--threads N]
 *
 * glibc's allocator share can be seen by fixing its mmap threshold (it otherwise rises after large
 * frees, and later buffers come from the heap, which keeps freed pages):
 *   MALLOC_MMAP_THRESHOLD_=131072 node dist/bench/memory-trace.js
 */
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { loadCheckpoint } from '../src/model/checkpoint.js';
import { applyRecipe, parseRecipe } from '../src/compress/recipe.js';
import { CORPUS, ROOT } from './machine.js';

const BASE = path.join(ROOT, 'bench', 'out', 'bert-base-random');
const MiB = 1024 * 1024;

interface Sample {
  seconds: number;
  rssMiB: number;
  arrayBuffersMiB: number;
  heapMiB: number;
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({ options: { threads: { type: 'string', default: '2' } }, allowPositionals: true });
  const mode = positionals[0] ?? 'sequential';
  if (mode !== 'sequential' && mode !== 'one-shot') throw new Error(`calibration mode must be sequential or one-shot, got ${mode}`);
  const t0 = performance.now();
  let peak: Sample = { seconds: 0, rssMiB: 0, arrayBuffersMiB: 0, heapMiB: 0 };
  let last = 0;
  const sample = (): Sample => {
    const m = process.memoryUsage();
    const s = { seconds: (performance.now() - t0) / 1000, rssMiB: m.rss / MiB, arrayBuffersMiB: m.arrayBuffers / MiB, heapMiB: m.heapUsed / MiB };
    if (s.rssMiB > peak.rssMiB) peak = s;
    return s;
  };
  const show = (s: Sample, what: string): void =>
    console.log(`${s.seconds.toFixed(1).padStart(6)} s  ${what.padEnd(8)} RSS ${s.rssMiB.toFixed(0).padStart(5)} MiB  ArrayBuffers ${s.arrayBuffersMiB.toFixed(0).padStart(5)}  JS heap ${s.heapMiB.toFixed(0).padStart(4)}  rest ${(s.rssMiB - s.arrayBuffersMiB - s.heapMiB).toFixed(0).padStart(5)}`);
  const timer = setInterval(() => {
    const s = sample();
    if (Math.abs(s.rssMiB - last) > 40) {
      last = s.rssMiB;
      show(s, 'sample');
    }
  }, 50);
  const ckpt = loadCheckpoint(BASE);
  show(sample(), 'loaded');
  const recipe = parseRecipe(
    JSON.stringify({ seed: 0, calibration: { file: CORPUS, samples: 128, seq_len: 128 }, steps: [{ method: 'gptq', bits: 4, group_size: 128, calibration: mode }] }),
    'memory-trace.json',
  );
  await applyRecipe(ckpt, recipe, { threads: Number(values.threads), inPlace: true });
  clearInterval(timer);
  show(peak, 'peak');
  console.log(`maxRSS ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MiB`);
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.stack ?? e.message : e);
  process.exit(1);
});
