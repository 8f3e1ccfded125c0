/**
 * The bias-aware grid (issues 14 §3 and 16): one `dike audit` per testbed model over every row below ×
 * bit widths, on benchmarks the methods never saw, with the held-out quality proxy; writes a markdown
 * table (bench/GRID.md) with Δbias vs dense + paired 95% CI + p, quality Δ, size, and the success
 * criterion per bias-aware row, passing and failing rows alike.
 *
 *   npm run grid -- [--models testbed:gpt2] [--bits 4,3] [--rows plain|all|name,…]
 *                   [--benchmark crows-pairs] [--data DIR] [--limit N] [--quality-lines N]
 *                   [--threads N] [--out grid-out] [--md bench/GRID.md]
 *
 * Rows are data (ROWS): a later method adds one line. A row whose method or option this build does not
 * have is listed as "not available in this build" rather than failing the grid.
 *
 * Success (issue 14 §3), per bias-aware row r, its plain method p at the same bits, benchmark b that r
 * never saw: p's Δ on b is significant (paired bootstrap 95% CI excludes 0), r's size is within 1% of
 * p's, r's held-out (pseudo-)perplexity is at most 2% above p's, and r's Δ CI contains 0 or lies below
 * p's Δ (upper end of r's CI < p's Δ). "n/a" when p's Δ is not significant.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseVariant, runAudit, overlapWarnings, type VariantSpec } from '../src/audit/audit.js';
import type { AuditResults, ModelEntry, PairedCell } from '../src/audit/types.js';
import { corpusFile } from '../src/embedded.js';
import { resolveDataDir } from '../src/measure/data.js';
import { findBenchmark } from '../src/measure/registry.js';
import { parseFlags, type CommandSpec } from '../src/cli/flags.js';
import { readTestbedRecord, resolveModelArg } from '../src/testbed/testbed.js';
import { DikeError } from '../src/errors.js';
import { existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { loadCheckpoint } from '../src/model/checkpoint.js';

export interface GridRow {
  /** Row name (unique). */
  name: string;
  kind: 'plain' | 'bias-aware' | 'control' | 'reference';
  /**
   * The `dike audit --variant` spec at `bits` (the same spec for every width when bits do not apply);
   * `locate` is the locate.json of a `locate` row (below).
   */
  spec: (bits: number, locate?: string) => string;
  /**
   * The row needs a `dike locate` run of RTN at `bits` (group 32) on the model, first-order prediction
   * per matrix, on benchmarks disjoint from the ones the grid scores (`locateBenchmarks`): the grid runs
   * it once per model and width into `<out>/<model>/locate-rtn<bits>` (reused when present).
   */
  locate?: boolean;
  /** bias-aware and control rows: the plain row they are judged against (same bits). */
  plain?: string;
  /** True when the row does not depend on the bit width (run once per model). */
  bitless?: boolean;
  /**
   * A row whose model is trained before the audit (a distilled student, a repaired pruned model): the
   * grid optionally compresses the dense model with `compress` (a `dike compress` method spec), then runs
   * `dike <command> <args>` into `<out>/<model>/built/<row>` and audits that directory (`spec` is
   * unused). A finished directory is reused and a killed run resumes from its checkpoint (resumable).
   */
  build?: GridBuild;
}

export interface GridBuild {
  command: 'train' | 'distill';
  /** Arguments after the model (`distill`: after the teacher; `train`: after `--model <dir>`), given the data directory and the dense model's blocks. */
  args: (dataDir: string, layers: number) => string[];
  /** Compress the dense model first (`method:key=value,…`), and train that. */
  compress?: string;
  /** Only for causal LMs (the counterfactual penalty scores sentence log-probs). */
  causalOnly?: boolean;
}

const G = 32;
const FAIR = (b: number, extra: string): string => `fair-gptq:bits=${b},group_size=${G},pairs=stereoset,pairs_limit=64,${extra}`;

/** DistilBERT's student (Sanh et al. 2019, §3): one block out of two, the first kept. */
export const EVERY_OTHER = (layers: number): string => Array.from({ length: Math.ceil(layers / 2) }, (_, i) => 2 * i).join(',');
const KD = (d: string): string[] => ['--data', corpusFile('train', d).file, '--seq', '64', '--batch', '8', '--steps', '300', '--lr', '5e-4', '--warmup', '20'];
const REPAIR = (d: string): string[] => ['--keep-sparsity', '--data', corpusFile('train', d).file, '--seq', '64', '--batch', '8', '--steps', '100', '--lr', '1e-4', '--warmup', '10'];
const CF = (d: string, beta: number): string[] => ['--cf-pairs', 'stereoset', '--cf-weight', String(beta), '--pairs-data', d];

/** The grid's rows: plain methods, Fair-GPTQ as published (authors' α and presets), controls, later methods. */
export const ROWS: GridRow[] = [
  { name: 'gptq', kind: 'plain', spec: (b) => `gptq:bits=${b},group_size=${G}` },
  { name: 'rtn', kind: 'plain', spec: (b) => `rtn:bits=${b},group_size=${G}` },
  { name: 'magnitude-0.5', kind: 'plain', spec: () => 'magnitude:sparsity=0.5', bitless: true },
  { name: 'fair-gptq α=0.5 sh=1 (authors)', kind: 'bias-aware', plain: 'gptq', spec: (b) => FAIR(b, 'alpha=0.5,sum_hessians=1') },
  { name: 'fair-gptq α=0.5 lower', kind: 'bias-aware', plain: 'gptq', spec: (b) => FAIR(b, 'alpha=0.5,sum_hessians=1,select_layers=lower') },
  { name: 'fair-gptq α=0.5 upper', kind: 'bias-aware', plain: 'gptq', spec: (b) => FAIR(b, 'alpha=0.5,sum_hessians=1,select_layers=upper') },
  { name: 'fair-gptq α=0.5 lower-upper', kind: 'bias-aware', plain: 'gptq', spec: (b) => FAIR(b, 'alpha=0.5,sum_hessians=1,select_layers=lower-upper') },
  { name: 'fair-gptq α=5 sh=1', kind: 'bias-aware', plain: 'gptq', spec: (b) => FAIR(b, 'alpha=5,sum_hessians=1') },
  { name: 'fair-gptq shuffled pairs (control)', kind: 'control', plain: 'gptq', spec: (b) => `fair-gptq:bits=${b},group_size=${G},pairs=shuffled:stereoset,pairs_limit=64,alpha=0.5,sum_hessians=1` },
  { name: 'fair-gptq unrelated pairs (control)', kind: 'control', plain: 'gptq', spec: (b) => `fair-gptq:bits=${b},group_size=${G},pairs=unrelated:stereoset,pairs_limit=64,alpha=0.5,sum_hessians=1` },
  { name: 'joint gptq α=0.5', kind: 'bias-aware', plain: 'gptq', spec: (b) => FAIR(b, 'alpha=0.5,solver=joint') },
  { name: 'fair-gptq quality_budget=0.02', kind: 'bias-aware', plain: 'gptq', spec: (b) => FAIR(b, 'quality_budget=0.02') },
  { name: 'fair-gptq counterfactual pairs', kind: 'bias-aware', plain: 'gptq', spec: (b) => `fair-gptq:bits=${b},group_size=${G},pairs=counterfactual,alpha=0.5,sum_hessians=1` },
  // The budgeted row's own controls: the same α search with pairs that carry no group contrast, so that
  // a pass of the budgeted row is not just the effect of any extra Hessian term at that α.
  { name: 'fair-gptq shuffled pairs quality_budget=0.02 (control)', kind: 'control', plain: 'gptq', spec: (b) => `fair-gptq:bits=${b},group_size=${G},pairs=shuffled:stereoset,pairs_limit=64,quality_budget=0.02` },
  { name: 'fair-gptq unrelated pairs quality_budget=0.02 (control)', kind: 'control', plain: 'gptq', spec: (b) => `fair-gptq:bits=${b},group_size=${G},pairs=unrelated:stereoset,pairs_limit=64,quality_budget=0.02` },
  // Pruning (issue 16): each bias-aware row is judged against the plain method it modifies.
  { name: 'sparsegpt-0.5', kind: 'plain', spec: () => 'sparsegpt:sparsity=0.5', bitless: true },
  { name: 'wanda-0.5', kind: 'plain', spec: () => 'wanda:sparsity=0.5', bitless: true },
  { name: 'fair-sparsegpt 50% α=0.1', kind: 'bias-aware', plain: 'sparsegpt-0.5', spec: () => 'fair-sparsegpt:sparsity=0.5,alpha=0.1,pairs=stereoset,pairs_limit=64', bitless: true },
  { name: 'fair-sparsegpt 50%', kind: 'bias-aware', plain: 'sparsegpt-0.5', spec: () => 'fair-sparsegpt:sparsity=0.5,alpha=1,pairs=stereoset,pairs_limit=64', bitless: true },
  { name: 'fair-wanda 50% α=0.1', kind: 'bias-aware', plain: 'wanda-0.5', spec: () => 'fair-wanda:sparsity=0.5,alpha=0.1,pairs=stereoset,pairs_limit=64', bitless: true },
  { name: 'fair-wanda 50% α=0.05', kind: 'bias-aware', plain: 'wanda-0.5', spec: () => 'fair-wanda:sparsity=0.5,alpha=0.05,pairs=stereoset,pairs_limit=64', bitless: true },
  { name: 'fair-wanda 50%', kind: 'bias-aware', plain: 'wanda-0.5', spec: () => 'fair-wanda:sparsity=0.5,alpha=1,pairs=stereoset,pairs_limit=64', bitless: true },
  // Their controls (as Fair-GPTQ's): the same α with pairs that carry no group contrast.
  { name: 'fair-wanda shuffled pairs (control)', kind: 'control', plain: 'wanda-0.5', spec: () => 'fair-wanda:sparsity=0.5,alpha=1,pairs=shuffled:stereoset,pairs_limit=64', bitless: true },
  { name: 'fair-wanda unrelated pairs (control)', kind: 'control', plain: 'wanda-0.5', spec: () => 'fair-wanda:sparsity=0.5,alpha=1,pairs=unrelated:stereoset,pairs_limit=64', bitless: true },
  { name: 'fair-wanda shuffled pairs α=0.1 (control)', kind: 'control', plain: 'wanda-0.5', spec: () => 'fair-wanda:sparsity=0.5,alpha=0.1,pairs=shuffled:stereoset,pairs_limit=64', bitless: true },
  { name: 'fair-wanda unrelated pairs α=0.1 (control)', kind: 'control', plain: 'wanda-0.5', spec: () => 'fair-wanda:sparsity=0.5,alpha=0.1,pairs=unrelated:stereoset,pairs_limit=64', bitless: true },
  // fair-sparsegpt's controls: α = 0 (SparseGPT calibrated on the pair sentences alone, no fairness
  // term) and the same α with pairs that carry no group contrast.
  { name: 'fair-sparsegpt α=0 on the pairs (control)', kind: 'control', plain: 'sparsegpt-0.5', spec: () => 'fair-sparsegpt:sparsity=0.5,alpha=0,pairs=stereoset,pairs_limit=64', bitless: true },
  { name: 'fair-sparsegpt shuffled pairs (control)', kind: 'control', plain: 'sparsegpt-0.5', spec: () => 'fair-sparsegpt:sparsity=0.5,alpha=1,pairs=shuffled:stereoset,pairs_limit=64', bitless: true },
  { name: 'fair-sparsegpt unrelated pairs (control)', kind: 'control', plain: 'sparsegpt-0.5', spec: () => 'fair-sparsegpt:sparsity=0.5,alpha=1,pairs=unrelated:stereoset,pairs_limit=64', bitless: true },
  { name: 'fair-sparsegpt shuffled pairs α=0.1 (control)', kind: 'control', plain: 'sparsegpt-0.5', spec: () => 'fair-sparsegpt:sparsity=0.5,alpha=0.1,pairs=shuffled:stereoset,pairs_limit=64', bitless: true },
  { name: 'fair-sparsegpt unrelated pairs α=0.1 (control)', kind: 'control', plain: 'sparsegpt-0.5', spec: () => 'fair-sparsegpt:sparsity=0.5,alpha=0.1,pairs=unrelated:stereoset,pairs_limit=64', bitless: true },
  { name: 'heads-0.25', kind: 'plain', spec: () => 'heads:fraction=0.25,importance=ablation,global=true', bitless: true },
  { name: 'fair-heads 25% λ=1', kind: 'bias-aware', plain: 'heads-0.25', spec: () => 'fair-heads:fraction=0.25,lambda=1,global=true,pairs=stereoset,pairs_limit=64', bitless: true },
  { name: 'fasp 25% γ=0.5', kind: 'bias-aware', plain: 'heads-0.25', spec: () => 'fasp:fraction=0.25,gamma=0.5,pairs=stereoset,pairs_limit=64', bitless: true },
  // Bias-aware mixed precision (issue 16): the matrices a `dike locate` of RTN at the grid's width ranks
  // most bias-sensitive (first-order prediction, on the half or benchmark the grid does not score) at 8
  // bits, the rest at the grid's width, one bit more on average; judged against the same allocation in
  // a seeded random order (same size).
  { name: 'mixed-precision random (+1 bit avg)', kind: 'plain', locate: true, spec: (b, loc) => `mixed-precision:locate=${loc},high_bits=8,low_bits=${b},avg_bits=${b + 1},group_size=${G},order=random` },
  { name: 'mixed-precision by locate (+1 bit avg)', kind: 'bias-aware', plain: 'mixed-precision random (+1 bit avg)', locate: true, spec: (b, loc) => `mixed-precision:locate=${loc},high_bits=8,low_bits=${b},avg_bits=${b + 1},group_size=${G}` },
  // Distillation (issue 16; Ahn et al. 2022: plain KD amplifies gender bias): a student of every other
  // block, DistilBERT-style, 300 steps of 8 × 64 tokens of lm_corpus; fair KD adds the counterfactual
  // gap penalty beyond the teacher's on StereoSet pairs (causal LMs).
  { name: 'kd half the blocks', kind: 'plain', spec: () => '', bitless: true, build: { command: 'distill', args: (d, l) => ['--student', EVERY_OTHER(l), ...KD(d)] } },
  { name: 'fair-kd β=0.01', kind: 'bias-aware', plain: 'kd half the blocks', spec: () => '', bitless: true, build: { command: 'distill', causalOnly: true, args: (d, l) => ['--student', EVERY_OTHER(l), ...KD(d), ...CF(d, 0.01)] } },
  // Post-compression repair (issue 16): the baseline every bias-aware pruning method must beat at equal
  // compute: magnitude 50%, then 100 steps with the mask kept, with (repair) or without (control) the penalty.
  { name: 'magnitude-0.5 + fine-tune', kind: 'control', plain: 'magnitude-0.5', spec: () => '', bitless: true, build: { command: 'train', compress: 'magnitude:sparsity=0.5', args: (d) => REPAIR(d) } },
  { name: 'magnitude-0.5 + repair β=0.01', kind: 'bias-aware', plain: 'magnitude-0.5', spec: () => '', bitless: true, build: { command: 'train', compress: 'magnitude:sparsity=0.5', causalOnly: true, args: (d) => [...REPAIR(d), ...CF(d, 0.01)] } },
];

export interface GridOptions {
  models: string[];
  bits: number[];
  rows: GridRow[];
  benchmarks: string[];
  dataDir: string;
  out: string;
  limit?: number;
  qualityLines: number;
  threads?: number;
  seed?: number;
  resamples?: number;
  log?: (line: string) => void;
}

export interface GridCell {
  model: string;
  row: GridRow;
  bits: number | null;
  variant?: string;
  unavailable?: string;
}

export interface GridModelResult {
  model: string;
  dir: string;
  cells: GridCell[];
  results: AuditResults;
}

/**
 * The benchmarks to score for a model trained on `seen` items: a benchmark of which the model saw one
 * half (`crows-pairs@even`) is replaced by the other half (`crows-pairs@odd`), which no step saw; the
 * rest are kept (the audit warns on any remaining overlap).
 */
export function heldOutBenchmarks(benchmarks: readonly string[], seen: readonly string[]): string[] {
  return benchmarks.map((b) => {
    const half = seen.find((x) => x.startsWith(`${b}@`));
    if (half === undefined) return b;
    return `${b}@${half.endsWith('@even') ? 'odd' : 'even'}`;
  });
}

/**
 * Where a locate row's sensitivities come from: for each scored benchmark, its other half when it is
 * scored by halves (crows-pairs@odd → crows-pairs@even), else StereoSet, or CrowS-Pairs when StereoSet
 * itself is scored; never a benchmark the grid scores.
 */
export function locateBenchmarks(scored: readonly string[]): string[] {
  const out = scored.map((b) => {
    const m = /^(.*)@(even|odd)$/.exec(b);
    if (m) return `${m[1]}@${m[2] === 'odd' ? 'even' : 'odd'}`;
    return b === 'stereoset' ? 'crows-pairs' : 'stereoset';
  });
  return [...new Set(out)].filter((b) => !scored.includes(b));
}

/** One audit per model over every available (row, bits); rows this build lacks are recorded as such. */
export async function runGrid(o: GridOptions): Promise<GridModelResult[]> {
  const out: GridModelResult[] = [];
  const log = o.log ?? (() => undefined);
  const seed = o.seed ?? 20260101;
  for (const m of o.models) {
    const { dir } = await resolveModelArg(m, { log });
    const calibration = { file: corpusFile('train', o.dataDir).file, samples: 32, seqLen: 64 };
    const variants: VariantSpec[] = [];
    const cells: GridCell[] = [];
    // A testbed keeps the model before its debias step: audited as a reference row.
    if (existsSync(path.join(dir, 'skewed', 'config.json'))) {
      const row: GridRow = { name: 'skewed (before debias)', kind: 'reference', spec: () => '', bitless: true };
      variants.push({ name: 'skewed', dir: path.join(dir, 'skewed'), spec: 'the testbed before its debias fine-tune' });
      cells.push({ model: m, row, bits: null, variant: 'skewed' });
    }
    const slug0 = m.replace(/[^A-Za-z0-9_.-]/g, '_');
    const scored = heldOutBenchmarks(o.benchmarks, readTestbedRecord(dir)?.benchmarksSeen ?? []);
    for (const row of o.rows) {
      for (const bits of row.bitless ? [null] : o.bits) {
        let locateFile: string | undefined;
        if (row.locate === true) {
          try {
            locateFile = locateRun(dir, bits ?? 4, locateBenchmarks(scored).slice(0, 1), path.join(o.out, slug0, `locate-rtn${bits ?? 4}`), o, log);
          } catch (e) {
            if (!(e instanceof DikeError)) throw e;
            cells.push({ model: m, row, bits, unavailable: e.message });
            continue;
          }
        }
        const spec = row.spec(bits ?? 0, locateFile);
        try {
          const v = row.build !== undefined ? buildRow(row, row.build, dir, path.join(o.out, m.replace(/[^A-Za-z0-9_.-]/g, '_'), 'built'), o, log) : parseVariant(spec, calibration, seed);
          if (variants.some((x) => x.name === v.name)) continue;
          variants.push(v);
          cells.push({ model: m, row, bits, variant: v.name });
        } catch (e) {
          if (!(e instanceof DikeError)) throw e;
          cells.push({ model: m, row, bits, unavailable: e.message });
        }
      }
    }
    const slug = m.replace(/[^A-Za-z0-9_.-]/g, '_');
    const benchmarks = heldOutBenchmarks(o.benchmarks, readTestbedRecord(dir)?.benchmarksSeen ?? []);
    for (const [i, b] of benchmarks.entries()) if (b !== o.benchmarks[i]) log(`grid: ${m} was trained on ${o.benchmarks[i]} items: scoring the held-out half ${b}`);
    log(`grid: ${m} — ${variants.length} variants × ${benchmarks.join(', ')}`);
    const results = await runAudit({
      model: dir,
      variants,
      benchmarks,
      dataDir: o.dataDir,
      out: path.join(o.out, slug),
      seed,
      resamples: o.resamples ?? 1000,
      alpha: 0.05,
      ...(o.limit !== undefined ? { limit: o.limit } : {}),
      ...(o.threads !== undefined ? { threads: o.threads } : {}),
      qualityLines: o.qualityLines,
      qualityFile: corpusFile('valid', o.dataDir).file,
      log,
    });
    out.push({ model: m, dir, cells, results });
  }
  return out;
}

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), path.basename(path.dirname(path.dirname(fileURLToPath(import.meta.url)))) === 'dist' ? '../src/cli/main.js' : '../dist/src/cli/main.js');

/** `dike locate` of RTN at `bits` g32 on the dense model (first-order prediction per matrix), once: returns its locate.json. */
function locateRun(denseDir: string, bits: number, benchmarks: string[], outDir: string, o: GridOptions, log: (line: string) => void): string {
  const file = path.join(outDir, 'locate.json');
  if (existsSync(file)) return file;
  if (benchmarks.length === 0) throw new DikeError('', 'locate', 'no benchmark disjoint from the scored ones to locate on');
  const args = ['locate', '--model', denseDir, '--variant', `rtn:bits=${bits},group_size=32`, '--benchmark', benchmarks.join(','), '--unit', 'matrix', '--predict-only', '--quality-lines', '0', '--data', o.dataDir, ...(o.threads !== undefined ? ['--threads', String(o.threads)] : []), ...(o.limit !== undefined ? ['--limit', String(o.limit)] : []), '--quiet', '--out', outDir];
  log(`grid: dike ${args.join(' ')}`);
  const r = spawnSync(process.execPath, [CLI, ...args], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0 || !existsSync(file)) throw new DikeError('', 'locate', `dike locate exited with ${r.status}`);
  return file;
}

/** Train a build row's model (compressing the dense model first when asked), once: a finished directory is reused. */
function buildRow(row: GridRow, b: GridBuild, denseDir: string, builtDir: string, o: GridOptions, log: (line: string) => void): VariantSpec {
  const dense = loadCheckpoint(denseDir);
  if (b.causalOnly === true && dense.task !== 'causal-lm') throw new DikeError('', row.name, 'causal LMs only (the counterfactual penalty scores sentence log-probs)');
  const slug = row.name.replace(/[^A-Za-z0-9_.-]+/g, '_');
  const dir = path.join(builtDir, slug);
  const threads = o.threads !== undefined ? ['--threads', String(o.threads)] : [];
  const run = (args: string[]): void => {
    log(`grid: dike ${args.join(' ')}`);
    const r = spawnSync(process.execPath, [CLI, ...args], { stdio: ['ignore', 'inherit', 'inherit'] });
    if (r.status !== 0) throw new DikeError('', row.name, `dike ${args[0]} exited with ${r.status}`);
  };
  if (!existsSync(path.join(dir, 'training.json'))) {
    let from = denseDir;
    if (b.compress !== undefined) {
      from = path.join(builtDir, `${slug}.compressed`);
      if (!existsSync(path.join(from, 'compression.json'))) {
        const [method, opts] = [b.compress.slice(0, b.compress.indexOf(':')), b.compress.slice(b.compress.indexOf(':') + 1)];
        run(['compress', denseDir, '--method', method, ...opts.split(',').flatMap((kv) => ['--opt', kv]), '--data', o.dataDir, ...threads, '--out', from]);
      }
    }
    const args = b.args(o.dataDir, dense.shape.numLayers);
    run(b.command === 'distill' ? ['distill', from, ...args, ...threads, '--quiet', '--out', dir] : ['train', '--model', from, ...args, ...threads, '--quiet', '--out', dir]);
  }
  return { name: slug, dir, spec: `${b.compress !== undefined ? `${b.compress}, then ` : ''}dike ${b.command} ${b.args(o.dataDir, dense.shape.numLayers).join(' ')}` };
}

const f2 = (x: number): string => (Number.isFinite(x) ? x.toFixed(2) : 'n/a');
const pv = (p: number): string => (!Number.isFinite(p) ? 'n/a' : p < 0.001 ? '<0.001' : p.toFixed(3));
const significant = (c: PairedCell): boolean => c.deltaCi95[0] > 0 || c.deltaCi95[1] < 0;

/** The success criterion for one bias-aware row on one benchmark, against its plain row. */
export function criterion(
  row: { cell: PairedCell; entry: ModelEntry },
  plain: { cell: PairedCell; entry: ModelEntry } | undefined,
  scale?: { dense: number; neutral: number },
): { verdict: 'pass' | 'fail' | 'n/a'; why: string } {
  if (plain === undefined) return { verdict: 'n/a', why: 'no plain row' };
  if (!significant(plain.cell)) return { verdict: 'n/a', why: 'plain Δ not significant' };
  // With the dense score and the benchmark's neutral point, "adds bias" means moving away from neutral,
  // in whichever direction the plain row moved (a testbed below neutral gains bias by going further
  // below it); without them, the signed reading: a higher score is more bias.
  const sigma = plain.cell.delta < 0 && scale !== undefined ? -1 : 1;
  if (scale !== undefined && Math.abs(scale.dense + plain.cell.delta - scale.neutral) <= Math.abs(scale.dense - scale.neutral)) {
    return { verdict: 'n/a', why: 'plain Δ moves toward neutral (adds no bias)' };
  }
  const reasons: string[] = [];
  const sr = row.entry.size?.bytes;
  const sp = plain.entry.size?.bytes;
  if (sr === undefined || sp === undefined || Math.abs(sr - sp) > 0.01 * sp) reasons.push('size differs from plain by > 1%');
  const qr = row.entry.quality?.value;
  const qp = plain.entry.quality?.value;
  if (qr === undefined || qp === undefined) reasons.push('no quality measured');
  else if (qr > 1.02 * qp) reasons.push(`quality ${((100 * (qr - qp)) / qp).toFixed(1)}% worse than plain`);
  const ci = row.cell.deltaCi95;
  const containsZero = ci[0] <= 0 && ci[1] >= 0;
  // "Below" in the direction of the bias: the whole CI is less biased than the plain Δ.
  const below = sigma > 0 ? ci[1] < plain.cell.delta : ci[0] > plain.cell.delta;
  const word = sigma > 0 ? 'below' : 'above';
  if (!containsZero && !below) reasons.push(`Δ CI excludes 0 and is not ${word} the plain Δ`);
  return reasons.length === 0 ? { verdict: 'pass', why: containsZero ? 'Δ CI contains 0' : `Δ CI ${word} plain Δ (less bias)` } : { verdict: 'fail', why: reasons.join('; ') };
}

/** The markdown table of a grid run. */
export function gridMarkdown(grid: GridModelResult[], command: string): string {
  const lines: string[] = [
    '# The bias-aware grid',
    '',
    `Generated by \`${command}\` (bench/grid.ts). Δ = variant − dense on each benchmark (paired bootstrap 95% CI, p: exact`,
    'McNemar or sign-flip permutation); quality = held-out (pseudo-)perplexity change vs dense; size = 16-bit values, quantized and',
    'pruned matrices as stored (src/audit/size.ts). Success (bias-aware and control rows): the plain row\'s Δ is significant and',
    'moves away from neutral, size within 1% and quality within 2% of it, and the row\'s Δ CI contains 0 or lies wholly on the',
    'less biased side of the plain Δ; a benchmark whose items a row saw (its debiasing pairs) is not scored for it ("seen").',
    '',
  ];
  for (const g of grid) {
    const r = g.results;
    lines.push(`## ${g.model}`, '');
    const dq = r.dense.quality;
    lines.push(`Dense: ${r.benchmarks.map((b) => `${b.benchmark} ${f2(b.dense.overall.score)} [${f2(b.dense.overall.ci95[0])}, ${f2(b.dense.overall.ci95[1])}]`).join('; ')}` +
      (dq ? `; ${dq.kind} ${f2(dq.value)}` : '') + (r.dense.size ? `; ${f2(r.dense.size.bytes / 1e6)} MB` : '') + '.', '');
    for (const w of r.warnings ?? []) lines.push(`> ${w}`, '');
    lines.push('| row | kind | bits | benchmark | score | Δ vs dense [95% CI] | p | quality Δ | size MB | success |', '|---|---|---|---|---|---|---|---|---|---|');
    const entryOf = (name: string): ModelEntry | undefined => r.variants.find((v) => v.name === name);
    for (const c of g.cells) {
      const bits = c.bits === null ? '—' : String(c.bits);
      if (c.unavailable !== undefined || c.variant === undefined) {
        lines.push(`| ${c.row.name} | ${c.row.kind} | ${bits} | — | — | not available in this build | — | — | — | — |`);
        continue;
      }
      const entry = entryOf(c.variant)!;
      const seen = new Set(overlapWarnings([entry], r.benchmarks.map((b) => ({ name: b.benchmark, folder: findBenchmark(b.benchmark)?.dataset.folder ?? b.benchmark })), '.').map((w) => r.benchmarks.find((b) => w.includes(`from ${b.benchmark} `) || w.includes(`on ${b.benchmark} items`))?.benchmark));
      for (const b of r.benchmarks) {
        const v = b.variants.find((x) => x.variant === c.variant)!;
        const q = entry.quality && dq ? `${(100 * (entry.quality.value - dq.value) / dq.value >= 0 ? '+' : '')}${((100 * (entry.quality.value - dq.value)) / dq.value).toFixed(1)}%` : '—';
        let success = '—';
        if (seen.has(b.benchmark)) success = 'seen (not scored)';
        else if (c.row.kind === 'bias-aware' || c.row.kind === 'control') {
          const pc = g.cells.find((x) => x.row.name === c.row.plain && (x.bits === c.bits || x.row.bitless) && x.variant !== undefined);
          const pe = pc ? entryOf(pc.variant!) : undefined;
          const pv2 = pc ? b.variants.find((x) => x.variant === pc.variant) : undefined;
          const verdict = criterion({ cell: v.overall, entry }, pe && pv2 ? { cell: pv2.overall, entry: pe } : undefined, { dense: b.dense.overall.score, neutral: b.neutral });
          success = `${verdict.verdict === 'pass' ? '**pass**' : verdict.verdict}: ${verdict.why}`;
        } else if (c.row.kind === 'plain') {
          const away = Math.abs(v.overall.score.score - b.neutral) > Math.abs(b.dense.overall.score - b.neutral);
          success = significant(v.overall) ? `significant, score ${v.overall.delta > 0 ? 'up' : 'down'} (${away ? 'away from' : 'toward'} ${f2(b.neutral)})` : 'not significant';
        }
        lines.push(`| ${c.row.name} | ${c.row.kind} | ${bits} | ${b.benchmark} | ${f2(v.overall.score.score)} | ${f2(v.overall.delta)} [${f2(v.overall.deltaCi95[0])}, ${f2(v.overall.deltaCi95[1])}] | ${pv(v.overall.p)} | ${q} | ${entry.size ? f2(entry.size.bytes / 1e6) : '—'} | ${success} |`);
      }
    }
    lines.push('');
  }
  return lines.join('\n') + '\n';
}

const spec: CommandSpec = {
  name: 'grid',
  summary: 'the bias-aware grid: dike audit over rows × bits × testbed models → bench/GRID.md',
  flags: {
    models: { type: 'list', default: 'testbed:gpt2', help: 'models (testbed:<name> (bert, gpt2: RTN adds bias; bert-gptq, gpt2-gptq: GPTQ-3 adds bias; bert-prune: magnitude and Wanda 50% add bias), embedded names or directories)' },
    bits: { type: 'int-list', min: 2, max: 8, default: '4,3', help: 'bit widths' },
    rows: { type: 'string', default: 'all', help: 'plain, all, or row names (comma-separated, as in ROWS)' },
    benchmark: { type: 'list', default: 'crows-pairs', help: 'benchmarks (the methods must never have seen them)' },
    data: { type: 'string', help: 'data directory (default: DIKE_DATA or the embedded data)' },
    limit: { type: 'int', min: 1, help: 'items per benchmark' },
    'quality-lines': { type: 'int', min: 0, default: 50, help: 'held-out lines for the quality proxy' },
    threads: { type: 'int', min: 1, max: 256, help: 'threads' },
    out: { type: 'string', default: 'grid-out', help: 'audit output directories (resumable)' },
    md: { type: 'string', default: 'bench/GRID.md', help: 'the markdown table' },
  },
};

export function selectRows(sel: string): GridRow[] {
  if (sel === 'all') return ROWS;
  if (sel === 'plain') return ROWS.filter((r) => r.kind === 'plain');
  const names = sel.split(',').map((s) => s.trim());
  const unknown = names.filter((n) => !ROWS.some((r) => r.name === n));
  if (unknown.length > 0) throw new DikeError('', '--rows', `unknown row "${unknown[0]}" (rows: ${ROWS.map((r) => r.name).join(', ')})`);
  return ROWS.filter((r) => names.includes(r.name));
}

async function main(argv: string[]): Promise<void> {
  const args = parseFlags(spec, argv);
  const dataDir = resolveDataDir(args.str('data'), { embedded: true });
  const grid = await runGrid({
    models: args.list('models')!,
    bits: args.values['bits'] as number[],
    rows: selectRows(args.str('rows')!),
    benchmarks: args.list('benchmark')!,
    dataDir,
    out: args.str('out')!,
    ...(args.num('limit') !== undefined ? { limit: args.num('limit')! } : {}),
    qualityLines: args.num('quality-lines')!,
    ...(args.num('threads') !== undefined ? { threads: args.num('threads')! } : {}),
    log: (l) => process.stderr.write(l + '\n'),
  });
  const md = args.str('md')!;
  mkdirSync(path.dirname(path.resolve(md)), { recursive: true });
  writeFileSync(md, gridMarkdown(grid, `npm run grid -- ${argv.join(' ')}`.trim()));
  process.stdout.write(`wrote ${md}\n`);
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === path.resolve(new URL(import.meta.url).pathname)) {
  main(process.argv.slice(2)).catch((e: unknown) => {
    process.stderr.write(`dike grid: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(e instanceof DikeError ? 1 : 2);
  });
}
