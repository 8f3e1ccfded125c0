/**
 * Facts about the machine the benchmark runs on: CPU, the OpenBLAS kernel choice for PyTorch, and
 * how much parallelism the cores really deliver (shared virtual machines often give less than
 * their core count).
 */
import type { Checkpoint } from '../src/model/checkpoint.js';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import ort from 'onnxruntime-node';
import { GraphBuilder } from '../src/model/graph/build.js';
import { graphToOnnx } from '../src/model/graph/to-onnx.js';
import { ortSessionOptions } from '../src/runtime/session.js';

export function cpuInfo(): { cpu: string; avx512: boolean; flags: Set<string> } {
  const text = fs.readFileSync('/proc/cpuinfo', 'utf8');
  const field = (name: string): string | undefined => new RegExp(`^${name}\\s*:\\s*(.*)$`, 'm').exec(text)?.[1]?.trim();
  const flags = new Set((field('flags') ?? '').split(/\s+/));
  const model = field('model name') ?? os.cpus()[0]?.model ?? 'unknown CPU';
  const cpu = `${model} (family ${field('cpu family') ?? '?'}, model ${field('model') ?? '?'}, stepping ${field('stepping') ?? '?'})`;
  return { cpu, avx512: flags.has('avx512f'), flags };
}

/**
 * OpenBLAS kernel set for PyTorch. Debian's OpenBLAS 0.3.21 does not recognise every recent Xeon:
 * on the family 6 / model 207 machine this bench was written on it fell back to its generic
 * "Prescott" kernels, 3–5× slower in float32 matrix products. The CPU flags tell which optimised
 * set is safe. An explicit choice (flag or environment) wins.
 */
export function openblasCoreType(flags: Set<string>, requested: string | undefined): { value: string | undefined; why: string } {
  if (requested) return { value: requested, why: 'given with --openblas-coretype' };
  const preset = process.env['OPENBLAS_CORETYPE'];
  if (preset) return { value: preset, why: 'preset in the environment' };
  if (['avx512f', 'avx512bw', 'avx512vl', 'avx512dq', 'avx512cd'].every((f) => flags.has(f))) {
    return { value: 'SkylakeX', why: 'chosen by the bench: the CPU has AVX-512 F/CD/BW/DQ/VL, what the SkylakeX kernels need' };
  }
  if (['avx2', 'fma'].every((f) => flags.has(f))) return { value: 'Haswell', why: 'chosen by the bench: the CPU has AVX2 + FMA, no AVX-512' };
  return { value: undefined, why: 'not set: OpenBLAS detects the CPU itself' };
}

export function packageVersion(root: string, name: string): string {
  const pkg = path.join(root, 'node_modules', name, 'package.json');
  return (JSON.parse(fs.readFileSync(pkg, 'utf8')) as { version: string }).version;
}

// A fixed CPU-bound loop (integer arithmetic, no memory traffic), run in worker threads.
const SPIN = `
const { parentPort } = require('node:worker_threads');
let x = 0;
for (let i = 0; i < 150000000; i++) x = (x + i * 7) % 1000003;
parentPort.postMessage(x);
`;

async function spinIn(workers: number): Promise<number> {
  const t0 = performance.now();
  await Promise.all(
    Array.from(
      { length: workers },
      () =>
        new Promise<void>((resolve, reject) => {
          const w = new Worker(SPIN, { eval: true });
          w.once('message', () => void w.terminate().then(() => resolve()));
          w.once('error', reject);
        }),
    ),
  );
  return performance.now() - t0;
}

/**
 * Effective parallelism of `threads` threads: threads × (time of one loop alone) ÷ (time of
 * `threads` copies at once). About `threads` on idle dedicated cores; near 1 when the virtual
 * cores share one physical core's time.
 */
export async function effectiveParallelism(threads: number): Promise<number> {
  await spinIn(1); // start-up and JIT warm-up
  const one = await spinIn(1);
  const many = await spinIn(threads);
  return (threads * one) / many;
}

/**
 * Environment for the PyTorch child process: thread counts, the OpenBLAS kernel set, and a passive
 * OpenMP wait. Debian's torch runs its own ops on OpenMP threads and its matrix products on
 * OpenBLAS's pthreads; with libgomp's default wait policy the idle OpenMP threads spin and starve
 * OpenBLAS (measured 217 vs 2500 tokens/s, small model, forward, B=1).
 */
export function torchEnv(threads: number, coreType: string | undefined): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    OMP_NUM_THREADS: String(threads),
    OPENBLAS_NUM_THREADS: String(threads),
    MKL_NUM_THREADS: String(threads),
    OMP_WAIT_POLICY: process.env['OMP_WAIT_POLICY'] ?? 'PASSIVE',
  };
  if (coreType) env['OPENBLAS_CORETYPE'] = coreType;
  else delete env['OPENBLAS_CORETYPE'];
  return env;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Replace the section of `file` between the `begin` and `end` markers (or append it), keeping the
 * rest: several benchmarks share bench/RESULTS.md.
 */
export function writeMarkedSection(file: string, begin: string, end: string, section: string): void {
  const old = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  const b = old.indexOf(begin);
  const e = old.indexOf(end);
  let text: string;
  if (b >= 0 && e > b) text = old.slice(0, b) + section + old.slice(e + end.length);
  else if (b >= 0 || e >= 0) throw new Error(`${file}: one section marker without the other; fix the file by hand`);
  else text = old === '' ? section + '\n' : old.replace(/\n*$/, '\n\n') + section + '\n';
  fs.writeFileSync(file, text);
}

/** Where benchmarks find things: the repository root (this file is dist/bench/machine.js), shared/, results. */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const SHARED = path.join(ROOT, '..', 'shared');
export const RESULTS = path.join(ROOT, 'bench', 'RESULTS.md');
export const SMALL_BERT = path.join(SHARED, 'models', 'small-bert-mlm');
export const CORPUS = path.join(SHARED, 'data', 'lm_corpus', 'train.txt');

/**
 * The opening of every benchmark run: CPU facts, the OpenBLAS core type PyTorch will use, the output
 * folder, and the effective parallelism of `threads` busy threads before any work (logged).
 */
export async function startRun(threads: number, coreTypeFlag: string | undefined, outDir: string, what = ''): Promise<{
  cpu: string;
  avx512: boolean;
  core: { value: string | undefined; why: string };
  parallelBefore: number;
}> {
  const { cpu, avx512, flags } = cpuInfo();
  const core = openblasCoreType(flags, coreTypeFlag);
  fs.mkdirSync(outDir, { recursive: true });
  console.log(`threads ${threads};${what ? ` ${what};` : ''} OPENBLAS_CORETYPE=${core.value ?? '(unset)'} (${core.why})`);
  const parallelBefore = await effectiveParallelism(threads);
  console.log(`effective parallelism of ${threads} threads: ${parallelBefore.toFixed(2)}`);
  return { cpu, avx512, core, parallelBefore };
}

/** Generate the random BERT-base-shaped model a run needs (once; cached under bench/out). */
export function ensureBaseModel(base: string, small: string, ensure: (base: string, small: string) => boolean): void {
  const t0 = Date.now();
  if (ensure(base, small)) console.log(`generated ${path.relative(ROOT, base)} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}

/** What every benchmark report states about the machine and the run. */
export interface RunFacts {
  date: string;
  cpu: string;
  cores: number;
  avx512: boolean;
  threads: number;
  /** Effective parallelism of `threads` busy threads, measured before and after the run. */
  parallelism: [number, number];
  node: string;
  ort: string;
}

/** Close a run started by startRun: measure the parallelism again and gather the machine facts. */
export async function runFacts(start: { cpu: string; avx512: boolean; parallelBefore: number }, threads: number): Promise<RunFacts> {
  const parallelAfter = await effectiveParallelism(threads);
  return {
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    cpu: start.cpu,
    cores: os.availableParallelism(),
    avx512: start.avx512,
    threads,
    parallelism: [start.parallelBefore, parallelAfter],
    node: process.version,
    ort: packageVersion(ROOT, 'onnxruntime-node'),
  };
}

/**
 * The machine's float32 GEMM rate through onnxruntime-node (MLAS): GFLOP/s of one n×n·n×n MatMul
 * (best of 5 after a warm-up), with the bench's session options and thread count. It is the
 * roofline the bench's "% of GEMM rate" columns divide by (with PyTorch's OpenBLAS rate beside it).
 */
export async function ortGemmRate(n: number, threads: number): Promise<number> {
  const b = new GraphBuilder('gemm-rate', { file: 'bench/machine', get: () => undefined });
  const x = b.input('a', 'float32', [n, n]);
  const y = b.input('b', 'float32', [n, n]);
  b.output(b.node('MatMul', [x, y])[0]!, 'c', 'float32', [n, n]);
  const s = await ort.InferenceSession.create(graphToOnnx(b.graph), ortSessionOptions(threads));
  const a = Float32Array.from({ length: n * n }, (_, i) => Math.sin(i));
  const feeds = { a: new ort.Tensor('float32', a, [n, n]), b: new ort.Tensor('float32', a.slice().reverse(), [n, n]) };
  await s.run(feeds);
  let best = Number.POSITIVE_INFINITY;
  for (let k = 0; k < 5; k++) {
    const t0 = performance.now();
    await s.run(feeds);
    best = Math.min(best, (performance.now() - t0) / 1000);
  }
  await s.release();
  return (2 * n ** 3) / best / 1e9;
}

/**
 * Issue 15's memory bound for GPTQ of a model: 2 × (every parameter in float32 + the float64
 * Hessians of the layer whose maps' Hessians are largest; one n×n per map, as each map gets its own).
 */
export function gptqMemoryBound(m: Pick<Checkpoint, 'params' | 'family' | 'config' | 'task'>): { weightsMiB: number; hessiansMiB: number; boundMiB: number; layer: number; dims: number[] } {
  const MiB = 1024 * 1024;
  let weights = 0;
  for (const p of m.params.values()) weights += 4 * p.shape.reduce((a, b) => a * b, 1);
  const perLayer = new Map<number, number[]>();
  for (const t of m.family.linears(m.config, m.task).filter((l) => l.layer >= 0)) perLayer.set(t.layer, [...(perLayer.get(t.layer) ?? []), t.inDim]);
  const bytes = (dims: number[]): number => dims.reduce((a, n) => a + 8 * n * n, 0);
  const [layer, dims] = [...perLayer].sort((a, b) => bytes(b[1]) - bytes(a[1]))[0]!;
  return { weightsMiB: weights / MiB, hessiansMiB: bytes(dims) / MiB, boundMiB: (2 * (weights + bytes(dims))) / MiB, layer, dims };
}
