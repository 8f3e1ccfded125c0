/**
 * Where the time goes: a top-10 profile per workload, from ONNX Runtime's own per-operator timings
 * (session option enableProfiling, switched on by DIKE_ORT_PROFILE in runtime/session.ts
 * ortSessionOptions). Each workload runs in a child process with its own profile files; the parent
 * sums the kernel time per operator type and writes the `profile` section of bench/RESULTS.md.
 * "outside ORT" is the workload's wall time minus the time ORT spent in its runs: JavaScript
 * (GPTQ's column loop, copies, Gram sums), session building and the hand-over of tensors.
 *
 *   npm run build && node dist/bench/profile.js [--threads N] [--no-write]
 *
 * Workloads (small, so that the whole profile takes a few minutes; the shapes are the bench's):
 *   calibration   Gram capture of all 72 maps of BERT-base-size (bench/out/bert-base-random), 32 × 128 tokens
 *   gptq          GPTQ 4-bit g128 of the 6 maps of its layer 0 on those statistics (float64 Gemm on ORT)
 *   train-step    4 AdamW steps of small-bert-mlm (from scratch), batch 32 × 64 (bench/train.ts's step)
 *   forward       head at every real position, small-bert-mlm, 128 lines of the corpus in batches of 8
 *   pll           pseudo-log-likelihood of those 128 lines, 8 per call
 * The profile is of one run on a shared machine: shares, not speeds.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { loadCheckpoint } from '../src/model/checkpoint.js';
import { inputStats, sampleCalibration } from '../src/compress/calibrate.js';
import { Gemm } from '../src/compress/gemm.js';
import { gptqMatrix, outIn, prepareHessian } from '../src/compress/methods/gptq.js';
import { makeBatch, maskedRowCapacity, packSequences, readParagraphs, type BatchSpec } from '../src/train/corpus.js';
import { initFromConfig } from '../src/train/init.js';
import { TrainSession } from '../src/train/session.js';
import { ModelRunner, padBatch } from '../src/runtime/session.js';
import { maskedTokenLogprobs, nonSpecialPositions } from '../src/score/masked.js';
import { cpuInfo, writeMarkedSection, ROOT, RESULTS, SMALL_BERT, CORPUS } from './machine.js';
import { ensureRandomBert } from './random-bert.js';

const BASE = path.join(ROOT, 'bench', 'out', 'bert-base-random');
const OUT = path.join(ROOT, 'bench', 'out', 'profile');
const BEGIN = '<!-- profile:begin (written by bench/profile.ts) -->';
const END = '<!-- profile:end -->';
const WORKLOADS = ['calibration', 'gptq', 'train-step', 'forward', 'pll'] as const;
type Workload = (typeof WORKLOADS)[number];
const DESCRIBE: Record<Workload, string> = {
  calibration: 'calibration, Gram capture of the 72 maps of BERT-base-size, 32 × 128 tokens (one-shot)',
  gptq: 'GPTQ 4-bit g128 of the 6 maps of layer 0 of BERT-base-size (float64; H⁻¹ made for each map)',
  'train-step': 'training step, small-bert-mlm from scratch, batch 32 × 64, 4 AdamW steps',
  forward: 'forward with the head at every real position, small-bert-mlm, 128 corpus lines (≤ 64 tokens), B = 8',
  pll: 'pseudo-log-likelihood, small-bert-mlm, 128 corpus lines (≤ 64 tokens), 8 per call',
};

/** Runs one workload in this process; returns its wall seconds. */
async function child(w: Workload, threads: number): Promise<number> {
  if (w === 'calibration' || w === 'gptq') {
    ensureRandomBert(BASE, SMALL_BERT);
    const ckpt = loadCheckpoint(BASE);
    const all = ckpt.family.linears(ckpt.config, ckpt.task).filter((l) => l.module !== 'head');
    const targets = w === 'gptq' ? all.filter((t) => t.layer === 0) : all;
    const calib = sampleCalibration(ckpt, { file: CORPUS, samples: w === 'gptq' ? 16 : 32, seqLen: 128, seed: 0 });
    if (w === 'calibration') {
      const t0 = performance.now();
      await inputStats(ckpt, ckpt.params, targets, calib, { threads });
      return (performance.now() - t0) / 1000;
    }
    // GPTQ: the statistics are computed before the clock starts and without the profiler (their
    // profile is the calibration's); ortSessionOptions reads DIKE_ORT_PROFILE when a session is made.
    const profile = process.env['DIKE_ORT_PROFILE'];
    delete process.env['DIKE_ORT_PROFILE'];
    const stats = await inputStats(ckpt, ckpt.params, targets, calib, { threads });
    if (profile !== undefined) process.env['DIKE_ORT_PROFILE'] = profile;
    const gemm = new Gemm(threads);
    const t0 = performance.now();
    for (const t of targets) {
      const h = await prepareHessian(gemm, stats.get(t.weight)!, 0.01, false);
      await gptqMatrix(gemm, outIn(ckpt.params.get(t.weight)!, t), t.outDim, t.inDim, h, { bits: 4, group_size: 128, symmetric: true, static_groups: false, block_size: 128 });
    }
    const secs = (performance.now() - t0) / 1000;
    await gemm.dispose();
    return secs;
  }
  if (w === 'train-step') {
    const model = initFromConfig(path.join(SMALL_BERT, 'config.json'), SMALL_BERT, 0);
    const tok = model.tokenizer;
    const rows = maskedRowCapacity(32, 64, 0.15);
    const seqs = packSequences(readParagraphs([CORPUS]), tok, { objective: 'masked-lm', seq: 64, seed: 0, maxSequences: 5 * 32 });
    const spec: BatchSpec = { objective: 'masked-lm', batch: 32, seq: 64, rows, seed: 0, mlmProbability: 0.15, vocabSize: tok.vocabSize, specialIds: tok.specialIds, maskId: tok.special.mask! };
    const session = await TrainSession.create(model, { batch: 32, seq: 64, rows, optimizer: { beta1: 0.9, beta2: 0.98, eps: 1e-6, weightDecay: 0.01, maxGradNorm: 1.0 } }, threads);
    const t0 = performance.now();
    for (let t = 0; t < 4; t++) await session.update(makeBatch(seqs, spec, t), 5e-4);
    const secs = (performance.now() - t0) / 1000;
    await session.release();
    return secs;
  }
  const ckpt = loadCheckpoint(SMALL_BERT);
  const tok = ckpt.tokenizer;
  const lines = fs.readFileSync(CORPUS, 'utf8').split(/\r?\n/).filter((l) => l.trim() !== '').slice(0, 128);
  const sentences = lines.map((l) => {
    const ids = tok.encode(l).ids.slice(0, 64);
    return { ids, positions: nonSpecialPositions(ids, tok.specialIds) };
  });
  const runner = await ModelRunner.create(ckpt, { threads });
  const t0 = performance.now();
  for (let i = 0; i < sentences.length; i += 8) {
    const group = sentences.slice(i, i + 8);
    if (w === 'forward') await runner.tokenLogits(padBatch(group.map((s) => s.ids), tok.special.pad ?? 0));
    else await maskedTokenLogprobs(runner, tok.special.mask!, tok.special.pad ?? 0, group);
  }
  const secs = (performance.now() - t0) / 1000;
  await runner.dispose();
  return secs;
}

interface OpTime {
  op: string;
  ms: number;
  calls: number;
}

/** Kernel time per operator type, and ORT's time in runs, from the profile files in `dir`. */
function readProfiles(dir: string): { ops: OpTime[]; kernelMs: number; runMs: number } {
  const ops = new Map<string, OpTime>();
  let runMs = 0;
  for (const f of fs.readdirSync(dir).filter((x) => x.endsWith('.json'))) {
    const events = JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) as { cat?: string; name?: string; dur?: number; args?: { op_name?: string } }[];
    for (const e of events) {
      if (e.cat === 'Session' && e.name === 'model_run') runMs += (e.dur ?? 0) / 1000;
      if (e.cat !== 'Node' || !e.name?.endsWith('_kernel_time')) continue;
      const op = e.args?.op_name ?? '?';
      const o = ops.get(op) ?? { op, ms: 0, calls: 0 };
      o.ms += (e.dur ?? 0) / 1000;
      o.calls++;
      ops.set(op, o);
    }
  }
  const list = [...ops.values()].sort((a, b) => b.ms - a.ms);
  return { ops: list, kernelMs: list.reduce((a, o) => a + o.ms, 0), runMs };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      threads: { type: 'string' },
      child: { type: 'string' },
      'no-write': { type: 'boolean', default: false },
      only: { type: 'string' },
    },
  });
  const threads = values.threads !== undefined ? Number(values.threads) : os.availableParallelism();
  if (values.child !== undefined) {
    const secs = await child(values.child as Workload, threads);
    console.log(JSON.stringify({ seconds: secs }));
    return;
  }
  const chosen = values.only !== undefined ? (values.only.split(',') as Workload[]) : [...WORKLOADS];
  const parts: string[] = [];
  for (const w of chosen) {
    const dir = path.join(OUT, w);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir, { recursive: true });
    const r = spawnSync(process.execPath, [path.join(ROOT, 'dist', 'bench', 'profile.js'), '--child', w, '--threads', String(threads)], {
      env: { ...process.env, DIKE_ORT_PROFILE: path.join(dir, 'ort') },
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    if (r.status !== 0) throw new Error(`profile of ${w} failed (exit ${r.status})`);
    const { seconds } = JSON.parse(r.stdout.trim().split('\n').pop()!) as { seconds: number };
    const p = readProfiles(dir);
    // Profiles cover the whole child (model building included); the workload's own runs are most of it.
    const outside = Math.max(0, seconds * 1000 - p.runMs);
    console.log(`${w}: ${seconds.toFixed(1)} s, ORT runs ${(p.runMs / 1000).toFixed(1)} s`);
    const rows = p.ops.slice(0, 10).map((o) => `| ${o.op} | ${o.calls} | ${(o.ms / 1000).toFixed(2)} | ${((100 * o.ms) / p.kernelMs).toFixed(1)}% |`);
    const rest = p.ops.slice(10).reduce((a, o) => a + o.ms, 0);
    parts.push(
      `**${DESCRIBE[w]}**: ${seconds.toFixed(2)} s wall; ORT runs ${(p.runMs / 1000).toFixed(2)} s (kernels ${(p.kernelMs / 1000).toFixed(2)} s); outside ORT ≈ ${(outside / 1000).toFixed(2)} s (${((100 * outside) / (seconds * 1000)).toFixed(0)}%).`,
      '',
      '| operator | calls | kernel s | share of kernel time |',
      '|---|---:|---:|---:|',
      ...rows,
      ...(rest > 0 ? [`| (${p.ops.length - 10} others) | | ${(rest / 1000).toFixed(2)} | ${((100 * rest) / p.kernelMs).toFixed(1)}% |`] : []),
      '',
    );
  }
  const section = [
    BEGIN,
    '## Profiles: where the time goes',
    '',
    `Written by \`node dist/bench/profile.js\` (bench/profile.ts) on ${new Date().toISOString().replace(/\.\d+Z$/, 'Z')}: ${cpuInfo().cpu}, ${threads} thread(s), load average ${os.loadavg().map((x) => x.toFixed(1)).join(' / ')} when it ended. Per-operator kernel time from ONNX Runtime's profiler (one run of each workload; a shared machine changes the seconds more than the shares). "Outside ORT" = wall − time inside ORT runs: JavaScript (GPTQ's column loop, copies, Gram sums in float64), and handing tensors across. Regenerate rather than edit.`,
    '',
    ...parts,
    END,
  ].join('\n');
  console.log(section);
  if (!values['no-write']) {
    writeMarkedSection(RESULTS, BEGIN, END, section);
    console.log(`wrote the profile section of ${path.relative(ROOT, RESULTS)}`);
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.stack ?? e.message : e);
  process.exit(1);
});
