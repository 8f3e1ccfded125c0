/**
 * Peak resident memory (maxRSS) of each workload of issue 15's table, each in a child process of its
 * own (a process's maxRSS only grows, so one process per workload is the only honest per-workload
 * figure), and the GPTQ bound the issue sets: 2 × (fp32 weights + the largest layer's Hessians).
 * Writes the `memory` section of bench/RESULTS.md. Dikē only (the PyTorch processes' peaks are in the
 * sections that run them).
 *
 *   npm run build && node dist/bench/memory.js [--threads N] [--only W,W] [--note TEXT] [--no-write]
 *
 * `--note` adds a sentence to the section's header (e.g. that the machine was shared).
 *
 * The workloads are the timed benches' (same models, sizes, options), run once, untimed.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { loadCheckpoint } from '../src/model/checkpoint.js';
import { inputStats, sampleCalibration } from '../src/compress/calibrate.js';
import { applyRecipe, parseRecipe } from '../src/compress/recipe.js';
import { crowsPairs } from '../src/measure/crows-pairs.js';
import { makeBatch, maskedRowCapacity, packSequences, readParagraphs, type BatchSpec } from '../src/train/corpus.js';
import { initFromConfig } from '../src/train/init.js';
import { TrainSession } from '../src/train/session.js';
import { ModelRunner } from '../src/runtime/session.js';
import { maskAndPadIds } from '../src/score/text.js';
import { dikePass } from './dike.js';
import { cpuInfo, gptqMemoryBound, writeMarkedSection, ROOT, RESULTS, SHARED, SMALL_BERT, CORPUS } from './machine.js';
import { ensureRandomBert } from './random-bert.js';
import { makeCase, pickSentences, type ModelWorkload } from './workload.js';

const BASE = path.join(ROOT, 'bench', 'out', 'bert-base-random');
const BEGIN = '<!-- memory:begin (written by bench/memory.ts) -->';
const END = '<!-- memory:end -->';
const MiB = 1024 * 1024;

interface Workload {
  name: string;
  /** What runs, in words (the timed section it mirrors). */
  what: string;
  run(threads: number): Promise<void>;
}

/** The calibration set of bench/gptq.ts: 128 × 128 tokens of lm_corpus/train.txt, seed 0. */
const GPTQ_CALIB = { file: CORPUS, samples: 128, seqLen: 128, seed: 0 };

async function gptqRecipe(mode: 'one-shot' | 'sequential', threads: number): Promise<void> {
  const ckpt = loadCheckpoint(BASE);
  const recipe = parseRecipe(
    JSON.stringify({ seed: 0, calibration: { file: CORPUS, samples: GPTQ_CALIB.samples, seq_len: GPTQ_CALIB.seqLen }, steps: [{ method: 'gptq', bits: 4, group_size: 128, calibration: mode }] }),
    'memory.json',
  );
  // In place, as `dike compress` runs it: the dense model is not needed afterwards.
  await applyRecipe(ckpt, recipe, { threads, inPlace: true });
}

async function runnerWork(dir: string, kind: 'forward' | 'pll', count: number, batch: number, threads: number): Promise<void> {
  const ckpt = loadCheckpoint(dir);
  const { mask, pad } = maskAndPadIds(ckpt);
  const sentences = pickSentences(path.join(SHARED, 'data', 'lm_corpus', 'valid.txt'), ckpt.tokenizer, count, 8, 40);
  const w: ModelWorkload = { name: path.basename(dir), dir, maskId: mask, padId: pad, sentences, cases: [] };
  const runner = await ModelRunner.create(ckpt, { threads });
  await dikePass(runner, w, makeCase(kind, sentences, count, batch, 0, 1), false);
  await runner.dispose();
}

async function crows(dir: string, limit: number, threads: number): Promise<void> {
  const ckpt = loadCheckpoint(dir);
  const runner = await ModelRunner.create(ckpt, { threads });
  await crowsPairs.run({ ckpt, runner, dataDir: path.join(SHARED, 'data') }, { scorer: 'nangia-pll', seed: 0, resamples: 0, limit });
  await runner.dispose();
}

const WORKLOADS: Workload[] = [
  {
    name: 'load-base',
    what: 'only `loadCheckpoint` of BERT-base-size: the floor under its rows (node, onnxruntime loaded, the safetensors file read tensor by tensor into float32 parameters)',
    run: async () => {
      loadCheckpoint(BASE);
    },
  },
  {
    name: 'calibration',
    what: 'Gram capture (one-shot `inputStats`) of the 72 maps of BERT-base-size, 128 × 128 tokens: all 72 Gram sums in float64 held at once (as bench/gptq.ts times it)',
    run: async (threads) => {
      const ckpt = loadCheckpoint(BASE);
      const targets = ckpt.family.linears(ckpt.config, ckpt.task).filter((l) => l.module !== 'head');
      await inputStats(ckpt, ckpt.params, targets, sampleCalibration(ckpt, GPTQ_CALIB), { threads });
    },
  },
  {
    name: 'gptq-sequential',
    what: 'GPTQ 4-bit g128 of the 72 maps of BERT-base-size, `applyRecipe` in place (`inPlace: true`, as `dike compress` runs it) with the default sequential calibration (block by block, group by group), 128 × 128 tokens',
    run: (threads) => gptqRecipe('sequential', threads),
  },
  {
    name: 'gptq-one-shot',
    what: 'the same with `calibration: one-shot` (every Gram first, then GPTQ)',
    run: (threads) => gptqRecipe('one-shot', threads),
  },
  {
    name: 'crows-small',
    what: 'CrowS-Pairs nangia-pll, small-bert-mlm, one `crowsPairs.run` call of 64 pairs (one batched call, as bench/crows.ts chunks them)',
    run: (threads) => crows(SMALL_BERT, 64, threads),
  },
  {
    name: 'crows-base',
    what: 'the same on BERT-base-size, 64 pairs',
    run: (threads) => crows(BASE, 64, threads),
  },
  { name: 'forward-small', what: 'forward with the head at every position, small-bert-mlm, 64 sentences, B = 32 (bench/run.ts)', run: (t) => runnerWork(SMALL_BERT, 'forward', 64, 32, t) },
  { name: 'forward-base', what: 'the same on BERT-base-size, 32 sentences, B = 32', run: (t) => runnerWork(BASE, 'forward', 32, 32, t) },
  { name: 'pll-small', what: 'pseudo-log-likelihood, small-bert-mlm, 32 sentences in one call (B = 32)', run: (t) => runnerWork(SMALL_BERT, 'pll', 32, 32, t) },
  { name: 'pll-base', what: 'the same on BERT-base-size, 16 sentences in one call (B = 16)', run: (t) => runnerWork(BASE, 'pll', 16, 16, t) },
  {
    name: 'train-step',
    what: 'training, small-bert-mlm shape from scratch, batch 32 × 64, 4 AdamW steps (bench/train.ts\'s step)',
    run: async (threads) => {
      const model = initFromConfig(path.join(SMALL_BERT, 'config.json'), SMALL_BERT, 0);
      const tok = model.tokenizer;
      const rows = maskedRowCapacity(32, 64, 0.15);
      const seqs = packSequences(readParagraphs([CORPUS]), tok, { objective: 'masked-lm', seq: 64, seed: 0, maxSequences: 5 * 32 });
      const spec: BatchSpec = { objective: 'masked-lm', batch: 32, seq: 64, rows, seed: 0, mlmProbability: 0.15, vocabSize: tok.vocabSize, specialIds: tok.specialIds, maskId: tok.special.mask! };
      const session = await TrainSession.create(model, { batch: 32, seq: 64, rows, optimizer: { beta1: 0.9, beta2: 0.98, eps: 1e-6, weightDecay: 0.01, maxGradNorm: 1.0 } }, threads);
      for (let t = 0; t < 4; t++) await session.update(makeBatch(seqs, spec, t), 5e-4);
      await session.release();
    },
  },
];

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { threads: { type: 'string' }, child: { type: 'string' }, only: { type: 'string' }, note: { type: 'string' }, 'no-write': { type: 'boolean', default: false } } });
  const threads = values.threads !== undefined ? Number(values.threads) : os.availableParallelism();
  if (values.child !== undefined) {
    const w = WORKLOADS.find((x) => x.name === values.child)!;
    const t0 = performance.now();
    await w.run(threads);
    console.log(JSON.stringify({ seconds: (performance.now() - t0) / 1000, maxRssKiB: process.resourceUsage().maxRSS }));
    return;
  }
  if (ensureRandomBert(BASE, SMALL_BERT)) console.log(`generated ${path.relative(ROOT, BASE)}`);
  const chosen = values.only !== undefined ? values.only.split(',') : WORKLOADS.map((w) => w.name);
  for (const c of chosen) if (!WORKLOADS.some((w) => w.name === c)) throw new Error(`--only: unknown workload ${c} (${WORKLOADS.map((w) => w.name).join(', ')})`);
  const started = Date.now();
  const measure = (name: string): { seconds: number; maxRssKiB: number } => {
    const r = spawnSync(process.execPath, [path.join(ROOT, 'dist', 'bench', 'memory.js'), '--child', name, '--threads', String(threads)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    if (r.status !== 0) throw new Error(`memory of ${name} failed (exit ${r.status})`);
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as { seconds: number; maxRssKiB: number };
  };
  const rows: string[] = [];
  const peaks = new Map<string, number>();
  for (const w of WORKLOADS.filter((x) => chosen.includes(x.name))) {
    const m = measure(w.name);
    peaks.set(w.name, m.maxRssKiB / 1024);
    console.log(`${w.name}: peak RSS ${(m.maxRssKiB / 1024).toFixed(0)} MiB, ${m.seconds.toFixed(1)} s`);
    rows.push(`| ${w.name} | ${w.what} | ${(m.maxRssKiB / 1024).toFixed(0)} | ${m.seconds.toFixed(1)} |`);
  }
  const b = gptqMemoryBound(loadCheckpoint(BASE));
  const verdict = (name: string): string => {
    const p = peaks.get(name);
    return p === undefined ? `${name}: not run` : `${name} ${p.toFixed(0)} MiB — ${p <= b.boundMiB ? '**within**' : '**over**'} (${(p / b.boundMiB).toFixed(2)}× the bound)`;
  };
  const section = [
    BEGIN,
    '## Peak memory per workload',
    '',
    `Written by \`node dist/bench/memory.js\` (bench/memory.ts) on ${new Date().toISOString().replace(/\.\d+Z$/, 'Z')}: ${cpuInfo().cpu}, ${threads} thread(s), ${((Date.now() - started) / 60000).toFixed(1)} min${values.note !== undefined ? `; ${values.note}` : ''}. Each workload runs once, untimed, in a child process of its own (node ${process.version}; the process's maxRSS from \`process.resourceUsage()\`, so the figure includes node, onnxruntime and the model). Regenerate rather than edit.`,
    '',
    '| workload | what runs | peak RSS MiB | seconds |',
    '|---|---|---:|---:|',
    ...rows,
    '',
    `**GPTQ bound** (issue 15: ≤ 2 × (fp32 weights + the largest layer's Hessians)): BERT-base-size's parameters in float32 ${b.weightsMiB.toFixed(0)} MiB; the largest layer's Hessians (layer ${b.layer}: one float64 n×n per map, n = ${b.dims.join(', ')}) ${b.hessiansMiB.toFixed(0)} MiB; bound **${b.boundMiB.toFixed(0)} MiB**. Measured: ${verdict('gptq-sequential')}; ${verdict('gptq-one-shot')}.`,
    END,
  ].join('\n');
  console.log(section);
  if (!values['no-write']) {
    writeMarkedSection(RESULTS, BEGIN, END, section);
    console.log(`wrote the memory section of ${path.relative(ROOT, RESULTS)}`);
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.stack ?? e.message : e);
  process.exit(1);
});
