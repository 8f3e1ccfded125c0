/**
 * GPTQ speed: Dikē (src/compress/methods/gptq.ts) against a PyTorch implementation of the same
 * algorithm (bench/torch_gptq.py), on the same Hessians and weights, in the same run. Appends (or
 * replaces) its own section of bench/RESULTS.md, between the GPTQ markers. See bench/README.md.
 *
 *   npm run build && node dist/bench/gptq.js [--threads N] [--samples 128] [--seq-len 128]
 *        [--layers 12] [--python /usr/bin/python3] [--openblas-coretype NAME] [--no-write]
 *
 * Workload: GPTQ 4-bit, group size 128, symmetric, dampening 0.01, block 128, on all 72 linear maps
 * of the BERT-base-size random model that bench/run.ts also uses (bench/out/bert-base-random/).
 * The Hessians are real: Dikē's calibration (ORT forward with Gram capture) over `samples` ×
 * `seq-len` tokens of lm_corpus/train.txt, timed and reported separately. Layer by layer, the
 * Gram matrices (float64) and weights (float32) go to a file that both sides read; Dikē and
 * PyTorch alternate which goes first (ABBA) so that drifts in machine load hit both alike. Both
 * sides invert the Hessian once per distinct input (q, k and v share theirs), and time that
 * ("H⁻¹") apart from the column loop of each matrix. The PyTorch side writes its quantized weights
 * back; the report compares the two sides' reconstruction errors and counts identical weights.
 *
 * Calibration is timed against PyTorch too (bench/torch_calib.py: the same batches, forward hooks
 * accumulating XᵀX per distinct input), with a checksum of every Gram matrix on both sides; and,
 * unless --no-sequential, Dikē's sequential walk (GPTQ's true_sequential: block by block, group by
 * group) is timed with a visit that compresses nothing, against the one-shot pass.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { parseArgs } from 'node:util';
import { loadCheckpoint } from '../src/model/checkpoint.js';
import type { LinearInfo } from '../src/model/arch/types.js';
import { inputStats, sampleCalibration, walkCalibration } from '../src/compress/calibrate.js';
import { Gemm } from '../src/compress/gemm.js';
import { gptqMatrix, prepareHessian } from '../src/compress/methods/gptq.js';
import type { InputStats, QuantState } from '../src/compress/types.js';
import { cpuInfo, gptqMemoryBound, openblasCoreType, packageVersion, torchEnv, writeMarkedSection, ROOT, RESULTS, SMALL_BERT, CORPUS } from './machine.js';
import { ensureRandomBert } from './random-bert.js';

const OUT = path.join(ROOT, 'bench', 'out', 'gptq');
const BASE = path.join(ROOT, 'bench', 'out', 'bert-base-random');
const SMALL = SMALL_BERT;
const BEGIN = '<!-- gptq-bench:begin (written by bench/gptq.ts) -->';
const END = '<!-- gptq-bench:end -->';

const OPTS = { bits: 4, group_size: 128, symmetric: true, act_order: false, static_groups: false, block_size: 128 } as const;
const DAMP = 0.01;

interface MatrixTiming {
  name: string;
  shape: string;
  dike: number;
  torch: number;
  dikeCpu: number;
  torchCpu: number;
  dikeError: number;
  torchError: number;
  sameWeights: number;
}

interface PrepTiming {
  dim: number;
  dike: number;
  torch: number;
  dikeCpu: number;
  torchCpu: number;
}

interface TorchCalibration {
  seconds: number;
  cpu: number;
  tokens: number;
  peak_rss_mib: number;
  checksums: Record<string, [number, number]>;
}

/** bench/torch_calib.py on the calibration batches Dikē runs (rows of `rows` sequences). */
function torchCalibration(python: string, threads: number, env: NodeJS.ProcessEnv, sequences: number[][], rows: number, layers: number): Promise<TorchCalibration> {
  const file = path.join(OUT, 'calibration-batches.json');
  const batches: number[][][] = [];
  for (let i = 0; i < sequences.length; i += rows) batches.push(sequences.slice(i, i + rows));
  fs.writeFileSync(file, JSON.stringify({ batches, padId: 0 }));
  const script = path.join(ROOT, 'bench', 'torch_calib.py');
  return new Promise((resolve, reject) => {
    const child = spawn(python, [script, BASE, file, '--threads', String(threads), '--layers', String(layers)], { env, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      fs.rmSync(file, { force: true });
      if (code !== 0) reject(new Error(`${python} ${script} exited with ${code}`));
      else resolve(JSON.parse(out.trim().split('\n').pop()!) as TorchCalibration);
    });
  });
}

/** Float64 sum and absolute sum of a Gram matrix (the checksum both calibration sides report). */
function gramChecksum(g: Float64Array): [number, number] {
  let s = 0;
  let a = 0;
  for (let i = 0; i < g.length; i++) {
    s += g[i]!;
    a += Math.abs(g[i]!);
  }
  return [s, a];
}

interface TorchAnswer {
  prep_seconds: number[];
  prep_cpu: number[];
  matrices: { name: string; seconds: number; cpu: number; error: number }[];
}

class TorchGptq {
  private constructor(
    private readonly child: ReturnType<typeof spawn>,
    private readonly lines: AsyncIterator<string>,
    readonly info: { torch: string; numpy: string; python: string; threads: number },
  ) {}

  static async start(python: string, threads: number, env: NodeJS.ProcessEnv): Promise<TorchGptq> {
    const script = path.join(ROOT, 'bench', 'torch_gptq.py');
    const child = spawn(python, [script, '--threads', String(threads)], { env, stdio: ['pipe', 'pipe', 'inherit'] });
    const lines = readline.createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
    const first = await lines.next();
    if (first.done) throw new Error(`${python} ${script} exited before it was ready`);
    return new TorchGptq(child, lines, JSON.parse(first.value as string));
  }

  async run(file: string, out: string, dtype: string): Promise<TorchAnswer> {
    this.child.stdin!.write(JSON.stringify({ file, out, dtype }) + '\n');
    const line = await this.lines.next();
    if (line.done) throw new Error('the PyTorch process ended (see its error above)');
    return JSON.parse(line.value as string) as TorchAnswer;
  }

  stop(): void {
    this.child.stdin!.end();
  }
}

/** [out, in] float32 copy of a stored weight. */
function outIn(data: Float32Array, t: LinearInfo): Float32Array {
  if (t.layout === 'out-in') return data.slice();
  const m = new Float32Array(t.outDim * t.inDim);
  for (let i = 0; i < t.inDim; i++) for (let o = 0; o < t.outDim; o++) m[o * t.inDim + i] = data[i * t.outDim + o]!;
  return m;
}

function sameGram(a: InputStats, b: InputStats): boolean {
  if (a.dim !== b.dim || a.tokens !== b.tokens) return false;
  for (let i = 0; i < a.gram.length; i++) if (a.gram[i] !== b.gram[i]) return false;
  return true;
}

/** The layer file: u64 header length, JSON header, then Gram matrices (f64) and weights (f32). */
function writeLayer(file: string, inputs: InputStats[], mats: { t: LinearInfo; input: number; W: Float32Array }[]): void {
  let offset = 0;
  const inHdr = inputs.map((s) => {
    const h = { dim: s.dim, tokens: s.tokens, offset };
    offset += s.gram.byteLength;
    return h;
  });
  const mHdr = mats.map((m) => {
    const h = { name: m.t.weight, rows: m.t.outDim, cols: m.t.inDim, input: m.input, offset };
    offset += m.W.byteLength;
    return h;
  });
  const header = Buffer.from(JSON.stringify({ bits: OPTS.bits, group_size: OPTS.group_size, damp: DAMP, inputs: inHdr, matrices: mHdr }));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(header.length));
  const fd = fs.openSync(file, 'w');
  try {
    fs.writeSync(fd, len);
    fs.writeSync(fd, header);
    for (const s of inputs) fs.writeSync(fd, new Uint8Array(s.gram.buffer, s.gram.byteOffset, s.gram.byteLength));
    for (const m of mats) fs.writeSync(fd, new Uint8Array(m.W.buffer, m.W.byteOffset, m.W.byteLength));
  } finally {
    fs.closeSync(fd);
  }
}

const seconds = (t0: number): number => (performance.now() - t0) / 1000;
/** Process CPU seconds (all threads, ORT's included) since `c0`. */
const cpuSeconds = (c0: NodeJS.CpuUsage): number => {
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / 1e6;
};
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);
const f = (x: number, d = 2): string => x.toFixed(d);

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      threads: { type: 'string' },
      samples: { type: 'string', default: '128' },
      'seq-len': { type: 'string', default: '128' },
      layers: { type: 'string' },
      python: { type: 'string', default: '/usr/bin/python3' },
      'openblas-coretype': { type: 'string' },
      'no-write': { type: 'boolean', default: false },
      'torch-dtype': { type: 'string', default: 'float32' },
      'no-sequential': { type: 'boolean', default: false },
    },
  });
  const threads = values.threads !== undefined ? Number(values.threads) : os.availableParallelism();
  const samples = Number(values.samples);
  const seqLen = Number(values['seq-len']);
  const started = Date.now();
  fs.mkdirSync(OUT, { recursive: true });
  if (ensureRandomBert(BASE, SMALL)) console.log(`generated ${path.relative(ROOT, BASE)}`);
  const ckpt = loadCheckpoint(BASE);
  const all = ckpt.family.linears(ckpt.config, ckpt.task).filter((l) => l.module !== 'head');
  const numLayers = values.layers !== undefined ? Number(values.layers) : ckpt.shape.numLayers;
  const targets = all.filter((t) => t.layer < numLayers);

  // Calibration: the Gram matrices of every target's input, with Dikē's ORT capture.
  const calib = sampleCalibration(ckpt, { file: CORPUS, samples, seqLen, seed: 0 });
  const { cpu, flags } = cpuInfo();
  const core = openblasCoreType(flags, values['openblas-coretype']);
  const tCal = performance.now();
  const cCal = process.cpuUsage();
  const stats = await inputStats(ckpt, ckpt.params, targets, calib, { threads });
  const calibration = seconds(tCal);
  const calibrationCpu = cpuSeconds(cCal);
  const tokens = stats.get(targets[0]!.weight)!.tokens;
  console.log(`calibration: ${tokens} tokens, ${targets.length} matrices, ${f(calibration, 1)} s`);
  const torchCal = await torchCalibration(values.python!, threads, torchEnv(threads, core.value), calib.sequences, calib.batching.rows, numLayers);
  console.log(`PyTorch calibration: ${torchCal.tokens} tokens, ${f(torchCal.seconds, 1)} s`);
  // Checksums of every Gram matrix: Dikē's float32 products summed in float64 against PyTorch's.
  const calRel = targets.map((t) => {
    const d = gramChecksum(stats.get(t.weight)!.gram);
    const p = torchCal.checksums[t.weight];
    if (p === undefined) throw new Error(`PyTorch calibration has no Gram for ${t.weight}`);
    return Math.abs(d[0] - p[0]) / p[1];
  });
  let sequential: { wall: number; cpu: number } | undefined;
  if (!values['no-sequential']) {
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    await walkCalibration(ckpt, ckpt.params, targets, calib, { mode: 'sequential', granularity: 'group', threads }, async () => {});
    sequential = { wall: seconds(t0), cpu: cpuSeconds(c0) };
    console.log(`sequential calibration (group by group, nothing compressed): ${f(sequential.wall, 1)} s`);
  }
  const torch = await TorchGptq.start(values.python!, threads, torchEnv(threads, core.value));
  const gemm = new Gemm(threads);
  const mats: MatrixTiming[] = [];
  const preps: PrepTiming[] = [];
  const layerFile = path.join(OUT, 'layer.bin');
  const torchOut = path.join(OUT, 'layer-torch.bin');
  try {
    for (let l = 0; l < numLayers; l++) {
      const lt = targets.filter((t) => t.layer === l);
      const inputs: InputStats[] = [];
      const layerMats = lt.map((t) => {
        const s = stats.get(t.weight)!;
        let input = inputs.findIndex((x) => sameGram(x, s));
        if (input < 0) input = inputs.push(s) - 1;
        return { t, input, W: outIn(ckpt.params.get(t.weight)!.data, t) };
      });
      writeLayer(layerFile, inputs, layerMats);

      const runDike = async (): Promise<{ prep: number[]; prepCpu: number[]; mats: { secs: number; cpu: number; error: number; weights: Float32Array; state: QuantState }[] }> => {
        const prep: number[] = [];
        const prepCpu: number[] = [];
        const hs = [];
        for (const s of inputs) {
          const t0 = performance.now();
          const c0 = process.cpuUsage();
          hs.push(await prepareHessian(gemm, s, DAMP, false));
          prep.push(seconds(t0));
          prepCpu.push(cpuSeconds(c0));
        }
        const res = [];
        for (const m of layerMats) {
          const t0 = performance.now();
          const c0 = process.cpuUsage();
          const r = await gptqMatrix(gemm, m.W, m.t.outDim, m.t.inDim, hs[m.input]!, OPTS);
          res.push({ secs: seconds(t0), cpu: cpuSeconds(c0), error: r.error, weights: r.weights, state: r.state });
        }
        return { prep, prepCpu, mats: res };
      };
      let dike: Awaited<ReturnType<typeof runDike>>;
      let tq: TorchAnswer;
      if (l % 2 === 0) {
        dike = await runDike();
        tq = await torch.run(layerFile, torchOut, values['torch-dtype']!);
      } else {
        tq = await torch.run(layerFile, torchOut, values['torch-dtype']!);
        dike = await runDike();
      }
      const tBytes = fs.readFileSync(torchOut);
      let off = 0;
      layerMats.forEach((m, i) => {
        const n = m.t.outDim * m.t.inDim;
        const tw = new Float32Array(tBytes.buffer.slice(tBytes.byteOffset + off, tBytes.byteOffset + off + 4 * n));
        off += 4 * n;
        const dw = dike.mats[i]!.weights;
        // Same grid point: within half of Dikē's step for that weight's group.
        const st = dike.mats[i]!.state;
        const groups = Math.ceil(st.cols / st.groupSize);
        let same = 0;
        for (let k = 0; k < n; k++) {
          const scale = st.scales[Math.floor(k / st.cols) * groups + Math.floor((k % st.cols) / st.groupSize)]!;
          if (Math.abs(tw[k]! - dw[k]!) < scale / 2) same++;
        }
        mats.push({
          name: m.t.weight,
          shape: `${m.t.outDim}×${m.t.inDim}`,
          dike: dike.mats[i]!.secs,
          torch: tq.matrices[i]!.seconds,
          dikeCpu: dike.mats[i]!.cpu,
          torchCpu: tq.matrices[i]!.cpu,
          dikeError: dike.mats[i]!.error,
          torchError: tq.matrices[i]!.error,
          sameWeights: same / n,
        });
      });
      inputs.forEach((s, i) => preps.push({ dim: s.dim, dike: dike.prep[i]!, torch: tq.prep_seconds[i]!, dikeCpu: dike.prepCpu[i]!, torchCpu: tq.prep_cpu[i]! }));
      const lm = mats.slice(-layerMats.length);
      console.log(
        `layer ${l}: Dikē ${f(sum(dike.prep) + sum(lm.map((m) => m.dike)))} s, PyTorch ${f(sum(tq.prep_seconds) + sum(lm.map((m) => m.torch)))} s`,
      );
    }
  } finally {
    torch.stop();
    await gemm.dispose();
    fs.rmSync(layerFile, { force: true });
    fs.rmSync(torchOut, { force: true });
  }

  const section = render({
    cpu,
    threads,
    core: core.value,
    torchInfo: torch.info,
    ort: packageVersion(ROOT, 'onnxruntime-node'),
    samples,
    seqLen,
    tokens,
    calibration,
    calibrationCpu,
    torchCal,
    calRel,
    sequential,
    peakRssMiB: process.resourceUsage().maxRSS / 1024,
    bound: gptqMemoryBound(ckpt),
    numLayers,
    mats,
    preps,
    torchDtype: values['torch-dtype']!,
    wall: (Date.now() - started) / 1000,
  });
  console.log(section);
  if (!values['no-write']) writeSection(section);
}

interface Report {
  cpu: string;
  threads: number;
  core: string | undefined;
  torchInfo: { torch: string; numpy: string; python: string; threads: number };
  ort: string;
  samples: number;
  seqLen: number;
  tokens: number;
  calibration: number;
  calibrationCpu: number;
  torchCal: TorchCalibration;
  calRel: number[];
  sequential: { wall: number; cpu: number } | undefined;
  peakRssMiB: number;
  bound: ReturnType<typeof gptqMemoryBound>;
  numLayers: number;
  mats: MatrixTiming[];
  preps: PrepTiming[];
  torchDtype: string;
  wall: number;
}

const met = (ok: boolean): string => (ok ? '**met**' : '**not met**');

function render(r: Report): string {
  type Pair = { dike: number; torch: number; dikeCpu: number; torchCpu: number };
  const total = (xs: Pair[], k: keyof Pair): number => sum(xs.map((x) => x[k]));
  const steps: Pair[] = [...r.preps, ...r.mats];
  const dikeTotal = total(steps, 'dike');
  const torchTotal = total(steps, 'torch');
  const rows: string[] = [];
  const row = (what: string, xs: Pair[]): void => {
    const d = xs.map((x) => x.dike);
    const t = xs.map((x) => x.torch);
    rows.push(
      `| ${what} | ${xs.length} | ${f(median(d), 3)} | ${f(median(t), 3)} | ${f(sum(d), 1)} | ${f(sum(t), 1)} | **${f(sum(t) / sum(d))}** | ${f(total(xs, 'dikeCpu'), 1)} | ${f(total(xs, 'torchCpu'), 1)} | ${f(total(xs, 'torchCpu') / total(xs, 'dikeCpu'))} |`,
    );
  };
  for (const dim of [...new Set(r.preps.map((p) => p.dim))].sort((a, b) => a - b)) row(`H⁻¹ (Cholesky), n = ${dim}`, r.preps.filter((p) => p.dim === dim));
  const shapes = [...new Set(r.mats.map((m) => m.shape))];
  for (const s of shapes) row(`column loop, ${s} [out×in]`, r.mats.filter((m) => m.shape === s));
  row('all', steps);
  const perShape = shapes.map((s) => {
    const ms = r.mats.filter((m) => m.shape === s);
    const dim = Number(s.split('×')[1]);
    const h = median(r.preps.filter((p) => p.dim === dim).map((p) => p.dike));
    return `${s}: ${f(median(ms.map((m) => m.dike)), 2)} s + H⁻¹ ${f(h, 2)} s`;
  });
  const relErr = r.mats.map((m) => Math.abs(m.dikeError - m.torchError) / Math.max(m.torchError, 1e-30));
  const dikeWins = r.mats.filter((m) => m.dikeError <= m.torchError).length;
  return [
    BEGIN,
    '## GPTQ: Dikē vs PyTorch',
    '',
    `Written by \`node dist/bench/gptq.js\` (bench/gptq.ts) on ${new Date().toISOString().replace(/\.\d+Z$/, 'Z')}; total run time ${f(r.wall / 60, 1)} min. Regenerate rather than edit.`,
    '',
    `- Machine: ${r.cpu}, ${os.availableParallelism()} cores visible, load average ${os.loadavg().map((x) => f(x, 1)).join(' / ')} (1/5/15 min) when the run ended; both sides use **${r.threads} thread(s)**${r.core ? `; OPENBLAS_CORETYPE=${r.core}` : ''}.`,
    `- Dikē: node ${process.version}, GPTQ of src/compress/methods/gptq.ts in float64; the O(n³) parts (blocked Cholesky and triangular inverse, lazy-batch updates) on onnxruntime-node ${r.ort} float64 Gemm, the column loop in JavaScript.`,
    `- PyTorch ${r.torchInfo.torch} (python ${r.torchInfo.python}): bench/torch_gptq.py, the reference's \`fasterquant\` loop in **${r.torchDtype}** (float32 is what IST-DASLab/gptq, AutoGPTQ and llm-compressor run), H⁻¹ as cholesky → cholesky_inverse → cholesky(upper).`,
    `- Workload: 4-bit, group size 128, symmetric, dampening 0.01, block 128, on all ${r.mats.length} linear maps of ${r.numLayers} layers of the BERT-base-size random model (\`bench/out/bert-base-random\`). Hessians from Dikē's calibration of that model on ${r.samples} × ${r.seqLen} tokens of lm_corpus/train.txt (${r.tokens} tokens); each layer's Gram matrices (float64) and weights are written to one file that both sides read. Both sides invert each distinct input's H once (q, k, v share theirs). Per layer, the side that goes first alternates.`,
    '- Wall seconds, and process CPU seconds (all threads; less sensitive to other load on a shared machine).',
    '',
    `**Calibration** (not part of the GPTQ table below), one-shot, ${r.tokens} tokens in batches of 16: Dikē (ORT forward with the Gram capture of src/model/graph/capture.ts: one product per distinct input, upper blocks only) ${f(r.calibration, 1)} s wall, ${f(r.calibrationCpu, 1)} s CPU; PyTorch (bench/torch_calib.py: forward hooks, XᵀX once per distinct input) ${f(r.torchCal.seconds, 1)} s wall, ${f(r.torchCal.cpu, 1)} s CPU: ratio PyTorch ÷ Dikē **${f(r.torchCal.seconds / r.calibration)}** (CPU ${f(r.torchCal.cpu / r.calibrationCpu)}). Dikē's wall includes building the ONNX session (PyTorch's excludes loading its model). Gram checksums (float64 sum of each of the ${r.calRel.length} matrices, |Δ| ÷ Σ|G|): median ${r.calRel.length ? median(r.calRel).toExponential(1) : '–'}, max ${r.calRel.length ? Math.max(...r.calRel).toExponential(1) : '–'} (float32 products; the sides sum the tokens in different orders).`,
    '',
    r.sequential !== undefined
      ? `**Sequential calibration** (GPTQ's true_sequential: block by block, each group of a block with the earlier groups compressed; timed here with a visit that compresses nothing): ${f(r.sequential.wall, 1)} s wall, ${f(r.sequential.cpu, 1)} s CPU, **${f(r.sequential.wall / r.calibration)}×** one-shot (CPU ${f(r.sequential.cpu / r.calibrationCpu)}×).`
      : '**Sequential calibration**: not timed (--no-sequential).',
    '',
    `**GPTQ total**: Dikē ${f(dikeTotal, 1)} s, PyTorch ${f(torchTotal, 1)} s (ratio PyTorch ÷ Dikē **${f(torchTotal / dikeTotal)}**, > 1: Dikē faster).`,
    '',
    `**Whole run** (one-shot calibration + GPTQ of all ${r.mats.length} maps): Dikē ${f(r.calibration + dikeTotal, 1)} s, PyTorch ${f(r.torchCal.seconds + torchTotal, 1)} s (ratio **${f((r.torchCal.seconds + torchTotal) / (r.calibration + dikeTotal))}**). Peak RSS of the Dikē bench process (model, all ${r.mats.length} Gram sums in float64, ORT sessions): ${f(r.peakRssMiB, 0)} MiB; the PyTorch calibration process: ${f(r.torchCal.peak_rss_mib, 0)} MiB.`,
    '',
    `**Goals (issue 15)**: calibration ≥ 1.2× PyTorch: ${f(r.torchCal.seconds / r.calibration)}× wall (CPU ${f(r.torchCal.cpu / r.calibrationCpu)}×) — ${met(r.torchCal.seconds / r.calibration >= 1.2)}; GPTQ ≥ 1.2×: ${f(torchTotal / dikeTotal)}× — ${met(torchTotal / dikeTotal >= 1.2)}; whole run ≤ 60 s: ${f(r.calibration + dikeTotal, 1)} s — ${met(r.calibration + dikeTotal <= 60)}; sequential ≤ 2× one-shot: ${r.sequential !== undefined ? `${f(r.sequential.wall / r.calibration)}× — ${met(r.sequential.wall / r.calibration <= 2)}` : 'not timed'}; peak RSS ≤ 2 × (fp32 weights ${f(r.bound.weightsMiB, 0)} MiB + the largest layer's Hessians ${f(r.bound.hessiansMiB, 0)} MiB) = ${f(r.bound.boundMiB, 0)} MiB: this process (which holds the one-shot statistics, the sequential walk and the PyTorch hand-over files, so not a GPTQ run as a user makes it) ${f(r.peakRssMiB, 0)} MiB; GPTQ as \`applyRecipe\` runs it, each in its own process: the "Peak memory per workload" section (bench/memory.ts).`,
    '',
    `Dikē per matrix (median wall): ${perShape.join('; ')}.`,
    '',
    '| step | count | Dikē median s | PyTorch median s | Dikē total s | PyTorch total s | PyTorch ÷ Dikē | Dikē CPU s | PyTorch CPU s | CPU ratio |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...rows,
    '',
    `**Agreement**: ‖(W − Ŵ)X‖² per matrix differs between the sides by ${f(100 * median(relErr), 3)}% (median), ${f(100 * Math.max(...relErr), 3)}% (max); Dikē's error is ≤ PyTorch's on ${dikeWins} of ${r.mats.length} matrices; weights on the same grid point (|Δŵ| < half a step): ${f(100 * median(r.mats.map((m) => m.sameWeights)), 2)}% (median over matrices), ${f(100 * Math.min(...r.mats.map((m) => m.sameWeights)), 2)}% (min).${r.torchDtype === 'float32' ? ' The sides differ by float64 vs float32 arithmetic: once a weight lands on the other side of a rounding boundary, the error feedback carries the difference along the rest of its row (`--torch-dtype float64` runs the PyTorch side in float64 to check that the two compute the same thing).' : ''}`,
    END,
  ].join('\n');
}

function writeSection(section: string): void {
  writeMarkedSection(RESULTS, BEGIN, END, section);
  console.log(`wrote the GPTQ section of ${path.relative(ROOT, RESULTS)}`);
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.stack ?? e.message : e);
  process.exit(1);
});
