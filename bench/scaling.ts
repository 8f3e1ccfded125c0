/**
 * How cost grows: the `scaling` section of bench/RESULTS.md. For each axis, wall seconds (median
 * of `--repeats` runs) at several sizes, the exponent a of a least-squares fit t ∝ sizeᵃ on log–log
 * axes, and next to it the exponent of the arithmetic (floating-point operations) over the same
 * sizes; a step whose time grows faster than its arithmetic (a − b > 0.25) is flagged.
 *
 *   npm run bench:scaling -- [--threads N] [--repeats 3] [--quick] [--no-write]
 *
 * Axes:
 *   CrowS-Pairs nangia-pll vs model width: random BERTs (bench/random-bert.ts) of 4 layers, hidden
 *     h = 128…768 (heads h/64, intermediate 4h, vocabulary 30 522), the first 64 pairs; arithmetic:
 *     every masked copy's body at its length (2·S·L·12h² + 4·L·S²·h) and the head at its row
 *     (2h² + 2hV), summed over the copies of the pairs' non-special positions.
 *   CrowS-Pairs nangia-pll vs number of pairs: small-bert-mlm, the first 32…512 pairs; arithmetic
 *     as above at h = 256.
 *   GPTQ vs matrix size: one n×n matrix, 4-bit g128, n = 256…2048, H from 2n random tokens, after
 *     one untimed run (ORT sessions are made on first use);
 *     H⁻¹ and the column loop together; arithmetic 2n³/3 (Cholesky + triangular inverse) + 2n³
 *     (lazy updates, rows·cols²).
 *   audit vs number of variants: `dike audit` of small-bert-mlm with 1, 2, 4 magnitude variants on
 *     crows-pairs (--limit 64, no quality proxy): the dense model is scored once, so the time
 *     should be a + b·k; the fit reports a and b as well as the exponent.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { loadCheckpoint, type Checkpoint } from '../src/model/checkpoint.js';
import { ModelRunner } from '../src/runtime/session.js';
import { crowsPairs, parseCrowsPairs } from '../src/measure/crows-pairs.js';
import { DEFAULT_SEED } from '../src/measure/stats/bootstrap.js';
import { nonSpecialPositions } from '../src/score/masked.js';
import { Gemm } from '../src/compress/gemm.js';
import { gptqMatrix, prepareHessian } from '../src/compress/methods/gptq.js';
import { cpuInfo, writeMarkedSection, ROOT, RESULTS, SHARED, SMALL_BERT } from './machine.js';
import { BERT_BASE, ensureRandomBert } from './random-bert.js';

const BEGIN = '<!-- scaling:begin (written by bench/scaling.ts) -->';
const END = '<!-- scaling:end -->';
const DATA = path.join(SHARED, 'data');
const OUT = path.join(ROOT, 'bench', 'out', 'scaling');
const CLI = path.join(ROOT, 'dist', 'src', 'cli', 'main.js');

interface Point {
  size: number;
  seconds: number;
  flops: number;
}

interface Axis {
  name: string;
  unit: string;
  points: Point[];
  note?: string;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/** Least-squares slope of log y on log x. */
function exponent(xs: number[], ys: number[]): number {
  const lx = xs.map(Math.log);
  const ly = ys.map(Math.log);
  const mx = lx.reduce((a, b) => a + b, 0) / lx.length;
  const my = ly.reduce((a, b) => a + b, 0) / ly.length;
  let num = 0;
  let den = 0;
  lx.forEach((x, i) => {
    num += (x - mx) * (ly[i]! - my);
    den += (x - mx) ** 2;
  });
  return num / den;
}

async function timed(repeats: number, f: () => Promise<void>, warmup = false): Promise<number> {
  if (warmup) await f(); // sessions made on first use are not part of the cost being fitted
  const ts: number[] = [];
  for (let r = 0; r < repeats; r++) {
    const t0 = performance.now();
    await f();
    ts.push((performance.now() - t0) / 1000);
  }
  return median(ts);
}

/** Arithmetic of nangia-pll over the first `limit` pairs: every non-special position of both sentences masked alone. */
function crowsFlops(ckpt: Checkpoint, limit: number, h: number, layers: number, inter: number, vocab: number): number {
  const file = path.join(DATA, 'crows-pairs', 'crows_pairs_anonymized.csv');
  const pairs = parseCrowsPairs(fs.readFileSync(file, 'utf8'), file).slice(0, limit);
  let flops = 0;
  for (const p of pairs) {
    for (const text of [p.sentMore, p.sentLess]) {
      const ids = ckpt.tokenizer.encode(text).ids;
      const S = ids.length;
      const copies = nonSpecialPositions(ids, ckpt.tokenizer.specialIds).length;
      flops += copies * (2 * S * layers * (4 * h * h + 2 * h * inter) + 4 * layers * S * S * h + 2 * h * h + 2 * h * vocab);
    }
  }
  return flops;
}

async function crowsTime(ckpt: Checkpoint, limit: number, threads: number, repeats: number): Promise<number> {
  const runner = await ModelRunner.create(ckpt, { threads });
  try {
    return await timed(repeats, async () => {
      await crowsPairs.run({ ckpt, runner, dataDir: DATA }, { scorer: 'nangia-pll', seed: DEFAULT_SEED, resamples: 0, limit });
    });
  } finally {
    await runner.dispose();
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      threads: { type: 'string' },
      repeats: { type: 'string', default: '3' },
      quick: { type: 'boolean', default: false },
      'no-write': { type: 'boolean', default: false },
    },
  });
  const threads = values.threads !== undefined ? Number(values.threads) : os.availableParallelism();
  const repeats = Number(values.repeats);
  const quick = values.quick!;
  const started = Date.now();
  fs.mkdirSync(OUT, { recursive: true });
  const axes: Axis[] = [];

  // CrowS-Pairs vs width.
  {
    const points: Point[] = [];
    const pairs = quick ? 16 : 64;
    for (const h of quick ? [128, 256] : [128, 256, 384, 512, 768]) {
      const shape = { ...BERT_BASE, hidden: h, layers: 4, heads: h / 64, intermediate: 4 * h };
      const dir = path.join(OUT, `bert-h${h}`);
      ensureRandomBert(dir, SMALL_BERT, shape);
      const ckpt = loadCheckpoint(dir);
      const seconds = await crowsTime(ckpt, pairs, threads, repeats);
      points.push({ size: h, seconds, flops: crowsFlops(ckpt, pairs, h, 4, 4 * h, shape.vocab) });
      console.log(`crows width h=${h}: ${seconds.toFixed(2)} s`);
    }
    axes.push({ name: `CrowS-Pairs nangia-pll, ${pairs} pairs, random BERT of 4 layers`, unit: 'hidden size', points });
  }
  // CrowS-Pairs vs pairs.
  {
    const points: Point[] = [];
    const ckpt = loadCheckpoint(SMALL_BERT);
    const cfg = ckpt.rawConfig as Record<string, number>;
    for (const n of quick ? [16, 32] : [32, 64, 128, 256, 512]) {
      const seconds = await crowsTime(ckpt, n, threads, repeats);
      points.push({ size: n, seconds, flops: crowsFlops(ckpt, n, cfg['hidden_size']!, cfg['num_hidden_layers']!, cfg['intermediate_size']!, cfg['vocab_size']!) });
      console.log(`crows pairs n=${n}: ${seconds.toFixed(2)} s`);
    }
    axes.push({ name: 'CrowS-Pairs nangia-pll, small-bert-mlm', unit: 'pairs', points });
  }
  // GPTQ vs matrix size.
  {
    const points: Point[] = [];
    const gemm = new Gemm(threads);
    for (const n of quick ? [128, 256] : [256, 512, 1024, 2048]) {
      const T = 2 * n;
      let s = 12345;
      const rnd = (): number => ((s = (s * 16807) % 2147483647) / 2147483647) - 0.5;
      const X = Float64Array.from({ length: T * n }, rnd);
      const gram = await gemm.product(X, X, n, T, n, { transA: true });
      const W = Float32Array.from({ length: n * n }, () => 0.04 * rnd());
      const seconds = await timed(repeats, async () => {
        const h = await prepareHessian(gemm, { gram, tokens: T, dim: n }, 0.01, false);
        await gptqMatrix(gemm, W, n, n, h, { bits: 4, group_size: 128, symmetric: true, static_groups: false, block_size: 128 });
      }, true);
      points.push({ size: n, seconds, flops: (2 / 3) * n ** 3 + 2 * n ** 3 });
      console.log(`gptq n=${n}: ${seconds.toFixed(2)} s`);
    }
    await gemm.dispose();
    axes.push({ name: 'GPTQ 4-bit g128 of one n×n matrix (H⁻¹ + column loop, float64)', unit: 'n', points });
  }
  // Audit vs number of variants.
  {
    const points: Point[] = [];
    const sweep = ['0.1', '0.3', '0.5', '0.7'];
    for (const k of quick ? [1, 2] : [1, 2, 4]) {
      const ts: number[] = [];
      for (let r = 0; r < (quick ? 1 : Math.min(repeats, 2)); r++) {
        const out = path.join(OUT, `audit-${k}`);
        fs.rmSync(out, { recursive: true, force: true });
        const args = [CLI, 'audit', '--model', SMALL_BERT, '--sweep', `magnitude:${sweep.slice(0, k).join(',')}`, '--benchmark', 'crows-pairs', '--data', DATA, '--limit', '64', '--quality-lines', '0', '--threads', String(threads), '--out', out, '--quiet'];
        const t0 = performance.now();
        const res = spawnSync(process.execPath, args, { stdio: ['ignore', 'ignore', 'inherit'] });
        if (res.status !== 0) throw new Error(`dike audit with ${k} variants failed (exit ${res.status})`);
        ts.push((performance.now() - t0) / 1000);
        fs.rmSync(out, { recursive: true, force: true });
      }
      // Arithmetic: the dense model and k variants scored on the same items (same shape): 1 + k.
      points.push({ size: k, seconds: median(ts), flops: 1 + k });
      console.log(`audit k=${k}: ${median(ts).toFixed(2)} s`);
    }
    const xs = points.map((p) => p.size);
    const ys = points.map((p) => p.seconds);
    const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
    const my = ys.reduce((a, b) => a + b, 0) / ys.length;
    const b = xs.reduce((a, x, i) => a + (x - mx) * (ys[i]! - my), 0) / xs.reduce((a, x) => a + (x - mx) ** 2, 0);
    axes.push({
      name: '`dike audit` of small-bert-mlm, crows-pairs --limit 64, k magnitude variants (process wall, start-up included)',
      unit: 'variants k',
      points,
      note: `linear fit t = a + b·k: a = ${(my - b * mx).toFixed(2)} s (start-up, dense scoring, report), b = ${b.toFixed(2)} s per variant (compress + score + paired statistics)`,
    });
  }

  const lines: string[] = [
    BEGIN,
    '## Scaling: how cost grows',
    '',
    `Written by \`node dist/bench/scaling.js\` (bench/scaling.ts) on ${new Date().toISOString().replace(/\.\d+Z$/, 'Z')}; ${cpuInfo().cpu}, ${threads} thread(s), median of ${repeats} run(s) per point, load average ${os.loadavg().map((x) => x.toFixed(1)).join(' / ')} when it ended; ${((Date.now() - started) / 60000).toFixed(1)} min in all. Exponent a: least-squares fit of log t on log size; b: the same fit of the arithmetic (FLOPs). ⚠ marks a − b > 0.25 (time growing faster than the work). Regenerate rather than edit.`,
    '',
    '| axis | sizes | seconds | time exponent a | arithmetic exponent b | a − b |',
    '|---|---|---|---:|---:|---:|',
  ];
  for (const a of axes) {
    const xs = a.points.map((p) => p.size);
    const ea = exponent(xs, a.points.map((p) => p.seconds));
    const eb = exponent(xs, a.points.map((p) => p.flops));
    const flag = ea - eb > 0.25 ? ' ⚠' : '';
    lines.push(`| ${a.name} | ${a.unit}: ${xs.join(', ')} | ${a.points.map((p) => p.seconds.toFixed(2)).join(', ')} | ${ea.toFixed(2)} | ${eb.toFixed(2)} | ${(ea - eb).toFixed(2)}${flag} |`);
  }
  lines.push('');
  for (const a of axes) if (a.note) lines.push(`- ${a.name}: ${a.note}.`);
  lines.push(END);
  const section = lines.join('\n');
  console.log(section);
  if (!values['no-write']) {
    writeMarkedSection(RESULTS, BEGIN, END, section);
    console.log(`wrote the scaling section of ${path.relative(ROOT, RESULTS)}`);
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.stack ?? e.message : e);
  process.exit(1);
});
