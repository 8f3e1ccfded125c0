/**
 * bench/RESULTS.md: machine, versions, settings, and one table per model comparing Dikē with
 * PyTorch case by case.
 */
import type { RunFacts } from './machine.js';
import type { Checksum, Kind } from './workload.js';
import { MASKED_MAX_TOKENS } from '../src/score/masked.js';

export interface Row {
  kind: Kind;
  batch: number;
  tokens: number;
  sentences: number;
  runs: number;
  /** Floating-point operations of one pass (workload.ts caseFlops; the same batches on both sides). */
  flops: number;
  /** Median wall seconds and median process CPU seconds (all threads) of the timed passes. */
  dike: { median: number; cpu: number; checksum: Checksum };
  torch: { median: number; cpu: number; checksum: Checksum };
}

export interface ModelSection {
  name: string;
  /** Where the model comes from, relative to the repository root. */
  source: string;
  description: string;
  /** Anything reduced for this model, in words. */
  note?: string;
  rows: Row[];
  /** Peak resident memory so far of the Dikē (bench) process and of this model's PyTorch process, MiB. */
  rss: { dikeMiB: number; torchMiB: number };
}

export interface Environment extends RunFacts {
  python: string;
  torch: string;
  numpy: string;
  openblas: string;
  openblasCoreType: string;
  /** Thread and wait-policy variables the PyTorch process ran with. */
  torchEnv: string;
  torchConfig: string[];
  wallSeconds: number;
  /** Float32 n×n GEMM rate, GFLOP/s: ORT (MLAS) and PyTorch (OpenBLAS), best of all measurements, and each one. */
  gemm: { n: number; ort: number; torch: number; ortAll: number[]; torchAll: number[] };
}

/** Issue 15's target for the forward rows: PyTorch time ÷ Dikē time at every B. */
const FORWARD_GOAL = 1.2;

/** Relative tolerance on the checksum; `scale` covers sums that cancel towards zero. */
export const CHECKSUM_RTOL = 1e-2;
const SCALE_RTOL = 1e-4;

export function checksumAgrees(d: Checksum, t: Checksum): { rel: number; ok: boolean } {
  const diff = Math.abs(d.sum - t.sum);
  const rel = diff / Math.max(Math.abs(t.sum), Number.MIN_VALUE);
  return { rel, ok: diff <= CHECKSUM_RTOL * Math.abs(t.sum) || diff <= SCALE_RTOL * t.scale };
}

const fmt = (x: number, digits = 1): string => x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
const sig = (x: number): string => x.toPrecision(8);
const pct = (x: number): string => `${(100 * x).toFixed(0)} %`;

export function renderResults(env: Environment, sections: ModelSection[]): string {
  const out: string[] = [];
  const roof = Math.max(env.gemm.ort, env.gemm.torch);
  out.push('# Dikē vs PyTorch: speed', '');
  out.push(`Written by bench/run.ts (\`npm run bench:forward\`; \`npm run bench\` runs it and every other section) on ${env.date}; run time ${fmt(env.wallSeconds / 60)} min. Regenerate rather than edit.`, '');
  out.push('## Machine and versions', '');
  out.push(`- CPU: ${env.cpu}, ${env.cores} cores visible, AVX-512 ${env.avx512 ? 'yes' : 'no'}; both sides use **${env.threads} thread(s)**`);
  out.push(
    `- Effective parallelism of ${env.threads} busy threads (a CPU-bound loop in ${env.threads} threads vs 1; ${env.threads}.00 = every core fully ours): ${env.parallelism[0].toFixed(2)} before the run, ${env.parallelism[1].toFixed(2)} after` +
      (Math.min(...env.parallelism) < 0.75 * env.threads ? ' — **the cores were shared with other load; absolute figures are low and noisy, the ratios (alternating passes) less so**' : ''),
  );
  out.push(`- Dikē: node ${env.node}, onnxruntime-node ${env.ort} (CPU execution provider, graph optimisation level "all", intra-op threads ${env.threads}, inter-op 1, sequential)`);
  out.push(`- PyTorch: ${env.torch} (python ${env.python}, numpy ${env.numpy}), float32, eval, \`torch.inference_mode()\`, \`torch.set_num_threads(${env.threads})\``);
  out.push(`- PyTorch's float32 matrix products run on OpenBLAS (MKL-DNN is built in but not used for them): ${env.openblas}; OPENBLAS_CORETYPE=${env.openblasCoreType}`);
  out.push(`- PyTorch process environment: ${env.torchEnv}`);
  out.push(`- \`torch.__config__.show()\` (excerpt): ${env.torchConfig.join('; ')}`);
  out.push('');
  out.push('## What is measured', '');
  out.push('The same token ids go through both sides: bench/run.ts tokenizes the sentences once and writes the batches to a JSON workload that bench/torch_bert.py executes.', '');
  out.push('- **forward**: B sentences right-padded, full forward pass including the MLM head at every position (logits [B, S, V], as Hugging Face\'s BertForMaskedLM). Dikē: `runner.hidden` then `runner.logits` over all B·S rows. tokens/s = real (unpadded) tokens, [CLS]/[SEP] included, / time.');
  out.push('- **forward-real**: the same, with the head only at the real (unpadded) tokens (logits [Σ lengths, V]); at B = 8 and 32 a third of the B·S rows here are padding. Dikē: `runner.tokenLogits(batch)` (ORT writes the logits straight into the returned buffer); PyTorch: `head(hidden[mask.bool()])`.');
  out.push(`- **pll**: pseudo-log-likelihood; every non-special position masked alone; the head + log-softmax run only at the masked rows. Dikē: one \`maskedTokenLogprobs\` call per group of B sentences, with its default cap of ${MASKED_MAX_TOKENS} tokens per ORT call (one sentence's copies are never split); it batches the masked copies of same-length sentences together (\`maskedBuckets\`), so no row is padded. PyTorch runs exactly those batches. tokens/s = scored tokens / time.`);
  out.push('- A pass = every batch of the workload once. One untimed warm-up pass per side (its outputs give the checksum), then N timed passes; the figure is the median pass time. Dikē and PyTorch passes alternate (ABBA order, 250 ms pause after each), so slow drifts in machine load hit both sides alike; PyTorch runs in a separate process that stays loaded for the whole model.');
  out.push('- **ratio** = Dikē tokens/s ÷ PyTorch tokens/s (> 1: Dikē is faster). **CPU ratio** = PyTorch ÷ Dikē median process CPU seconds of a pass (all threads; less sensitive than wall time to other load on a shared machine).');
  out.push(`- **GFLOP/s** = the pass\'s floating-point operations (matrix products of the body at the padded length as run, and of the head at the projected rows; workload.ts \`caseFlops\`) ÷ median wall time; **% GEMM** = that ÷ the machine\'s float32 GEMM rate measured in this run (${env.gemm.n}×${env.gemm.n} MatMul, best of the measurements before and after each model): ORT ${fmt(env.gemm.ort)} GFLOP/s (each: ${env.gemm.ortAll.map((x) => fmt(x)).join(', ')}), PyTorch/OpenBLAS ${fmt(env.gemm.torch)} GFLOP/s (each: ${env.gemm.torchAll.map((x) => fmt(x)).join(', ')}); both sides are divided by the higher of the two, ${fmt(Math.max(env.gemm.ort, env.gemm.torch))} GFLOP/s (the machine\'s rate as measured; a low or spread set of measurements means the cores were shared).`);
  out.push(`- **checksum**: forward, the sum of the logits over the whole vocabulary at positions 0, 1 and len−1 of every sentence; pll, the sum of all log-probabilities. "agree" = within ${CHECKSUM_RTOL} relative (or 1e-4 of the sum of absolute values, for sums that cancel).`);
  out.push('');
  for (const s of sections) {
    out.push(`## ${s.name}`, '');
    out.push(`${s.description}. Source: ${s.source}.`, '');
    if (s.note) out.push(`${s.note}`, '');
    out.push('| workload | B | sentences | tokens/pass | Dikē tok/s | PyTorch tok/s | ratio Dikē/PyTorch | CPU ratio | Dikē median s | PyTorch median s | Dikē CPU s | PyTorch CPU s | GFLOP/pass | Dikē GFLOP/s (% GEMM) | PyTorch GFLOP/s (% GEMM) | runs | checksum Dikē | checksum PyTorch | rel. diff | agree |');
    out.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|');
    for (const r of s.rows) {
      const dts = r.tokens / r.dike.median;
      const tts = r.tokens / r.torch.median;
      const c = checksumAgrees(r.dike.checksum, r.torch.checksum);
      out.push(
        `| ${r.kind} | ${r.batch} | ${r.sentences} | ${r.tokens} | ${fmt(dts)} | ${fmt(tts)} | **${(dts / tts).toFixed(2)}** | ${(r.torch.cpu / r.dike.cpu).toFixed(2)} | ${r.dike.median.toFixed(3)} | ${r.torch.median.toFixed(3)} | ${r.dike.cpu.toFixed(3)} | ${r.torch.cpu.toFixed(3)} | ${fmt(r.flops / 1e9, 2)} | ${fmt(r.flops / r.dike.median / 1e9)} (${pct(r.flops / r.dike.median / 1e9 / roof)}) | ${fmt(r.flops / r.torch.median / 1e9)} (${pct(r.flops / r.torch.median / 1e9 / roof)}) | ${r.runs} | ${sig(r.dike.checksum.sum)} | ${sig(r.torch.checksum.sum)} | ${c.rel.toExponential(1)} | ${c.ok ? 'yes' : '**NO**'} |`,
      );
    }
    out.push('');
    const pll = s.rows.filter((r) => r.kind === 'pll');
    const one = pll.find((r) => r.batch === 1);
    if (one !== undefined && pll.length > 1) {
      out.push(`**PLL batching vs Dikē's own B = 1** (issue 15: batching never slower than B = 1; ≥ 1.00 = met, from the medians above):`, '');
      out.push('| B | Dikē tok/s | ÷ B = 1, wall | Dikē CPU s | ÷ B = 1, CPU (B = 1 CPU s ÷ this) | met (wall) |');
      out.push('|---:|---:|---:|---:|---:|:---:|');
      for (const r of pll) {
        const wall = one.dike.median / r.dike.median;
        out.push(`| ${r.batch} | ${fmt(r.tokens / r.dike.median)} | **${wall.toFixed(2)}** | ${r.dike.cpu.toFixed(3)} | ${(one.dike.cpu / r.dike.cpu).toFixed(2)} | ${r.batch === 1 ? '—' : wall >= 1 ? 'yes' : '**no**'} |`);
      }
      out.push('');
    }
    out.push(`Peak resident memory (maxRSS): Dikē bench process ${fmt(s.rss.dikeMiB, 0)} MiB (cumulative over the models run so far in this process), PyTorch process ${fmt(s.rss.torchMiB, 0)} MiB. Each workload's own peak, in a process of its own: the "Peak memory per workload" section (bench/memory.ts).`, '');
  }
  const fwd = sections.flatMap((s) => s.rows.filter((r) => r.kind === 'forward').map((r) => ({ s, r, ratio: r.torch.median / r.dike.median })));
  out.push('## Goals (issue 15) for these workloads', '');
  out.push(
    `- Forward with the head at every position ≥ ${FORWARD_GOAL}× PyTorch at every B: ${fwd.map(({ s, r, ratio }) => `${s.name} B=${r.batch} ${ratio.toFixed(2)}×`).join(', ')} — ${fwd.every((x) => x.ratio >= FORWARD_GOAL) ? '**met**' : '**not met**'}.`,
  );
  const pllAll = sections.flatMap((s) => {
    const one = s.rows.find((r) => r.kind === 'pll' && r.batch === 1);
    return one === undefined ? [] : s.rows.filter((r) => r.kind === 'pll' && r.batch > 1).map((r) => ({ s, r, ratio: one.dike.median / r.dike.median }));
  });
  out.push(
    `- PLL batched never slower than Dikē's own B = 1: ${pllAll.map(({ s, r, ratio }) => `${s.name} B=${r.batch} ${ratio.toFixed(2)}×`).join(', ')} — ${pllAll.every((x) => x.ratio >= 1) ? '**met**' : '**not met**'}.`,
    '',
  );
  const slower = sections.flatMap((s) =>
    s.rows
      .filter((r) => r.torch.median < r.dike.median)
      .map((r) => `${s.name} ${r.kind} B=${r.batch}: Dikē at ${(r.torch.median / r.dike.median).toFixed(2)}× PyTorch's tokens/s`),
  );
  out.push('## Where Dikē is slower than PyTorch', '');
  out.push(slower.length === 0 ? 'Nowhere in this run.' : slower.map((x) => `- ${x}`).join('\n'));
  out.push('');
  return out.join('\n');
}
