/** Locating the repository and the shared fixtures (`../shared` relative to the repository root). */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readSafetensors, toFloat32 } from '../src/model/safetensors.js';
import { loadCheckpoint, type Checkpoint } from '../src/model/checkpoint.js';

export function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error('package.json not found above the test file');
    dir = up;
  }
  return dir;
}

export const SHARED = path.resolve(repoRoot(), '..', 'shared');
export const MODELS = path.join(SHARED, 'models');
export const DATA = path.join(SHARED, 'data');

export function modelDir(name: string): string {
  return path.join(MODELS, name);
}

export interface GoldenText {
  text: string;
  tokens: string[];
  ids: number[];
  input_ids?: number[];
  logprobs?: number[];
  total?: number;
  pll_positions?: number[];
  pll_logprobs?: number[];
  pll_total?: number;
  logits?: number[];
  probs?: number[];
  predicted_label?: string;
}

export interface Golden {
  model: string;
  architecture: string;
  texts: GoldenText[];
  batch: { input_ids: number[][]; attention_mask: number[][]; pad_token_id: number };
  logits_stored_for_texts: number[];
  num_hidden_entries: number;
}

export function readGolden(model: string): { golden: Golden; tensors: Map<string, { shape: number[]; data: Float32Array }> } {
  const golden = JSON.parse(readFileSync(path.join(modelDir(model), 'golden.json'), 'utf8')) as Golden;
  const st = readSafetensors(path.join(modelDir(model), 'golden.safetensors'));
  const tensors = new Map([...st.tensors].map(([k, t]) => [k, { shape: t.shape, data: toFloat32(t) }]));
  return { golden, tensors };
}

/** Largest |a − b| over two equal-length arrays (throws on a length mismatch). */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} ≠ ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

/** log softmax of one row, in float64. */
export function logSoftmaxRow(row: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) max = Math.max(max, row[i]!);
  let s = 0;
  for (let i = 0; i < row.length; i++) s += Math.exp(row[i]! - max);
  const lse = max + Math.log(s);
  return Float64Array.from({ length: row.length }, (_, i) => row[i]! - lse);
}

const cachedCheckpoints = new Map<string, Checkpoint>();

/** A shared model loaded once per test file (callers must not modify its parameters). */
export function loadModelCached(name: string): Checkpoint {
  let c = cachedCheckpoints.get(name);
  if (c === undefined) cachedCheckpoints.set(name, (c = loadCheckpoint(modelDir(name))));
  return c;
}

const scratch: string[] = [];

/** Remove `dir` when the test process exits. */
export function removeLater(dir: string): void {
  if (scratch.length === 0) process.on('exit', () => scratch.forEach((d) => rmSync(d, { recursive: true, force: true })));
  scratch.push(dir);
}

/** A fresh temporary directory, removed when the test process exits. */
export function scratchDir(tag: string): string {
  const d = mkdtempSync(path.join(tmpdir(), `dike-${tag}-`));
  removeLater(d);
  return d;
}

// ---- the command line, as a user runs it ----------------------------------------------------------

export const CLI = path.join(repoRoot(), 'dist', 'src', 'cli', 'main.js');

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run `dike` (the built CLI) without DIKE_DEBUG, so errors are what a user sees. */
export function dike(args: readonly string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): CliRun {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...(opts.env ?? process.env), DIKE_DEBUG: '' }, ...(opts.cwd ? { cwd: opts.cwd } : {}) });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/**
 * Run `dike` with stdout on a real pipe read slowly, as `dike … | jq` or a slow consumer reads it:
 * the reader pauses after every chunk, so the pipe fills and the CLI's writes stay pending. A CLI
 * that exits before its stdout drains loses the tail here (spawnSync, which drains eagerly into a
 * buffer, would not see that).
 */
export function dikePiped(args: readonly string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; pauseMs?: number } = {}): Promise<CliRun & { chunks: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...(opts.env ?? process.env), DIKE_DEBUG: '' }, ...(opts.cwd ? { cwd: opts.cwd } : {}) });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.stdout.on('data', (b: Buffer) => {
      out.push(b);
      child.stdout.pause();
      setTimeout(() => child.stdout.resume(), opts.pauseMs ?? 5);
    });
    let exit: number | null = null;
    let ended = 0;
    const done = (): void => {
      if (++ended === 3) resolve({ code: exit ?? -1, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), chunks: out.length });
    };
    child.stdout.on('end', done);
    child.stderr.on('end', done);
    child.on('error', reject);
    child.on('exit', (code) => ((exit = code), done()));
  });
}

/** A bad-input failure: non-zero exit, one line on stderr, no stack trace, not an internal error, naming `parts`. */
export function assertOneLineError(r: CliRun, ...parts: (string | RegExp)[]): void {
  assert.notEqual(r.code, 0, 'exit code');
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `one line, got: ${r.stderr}`);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  assert.doesNotMatch(r.stderr, /internal error/, 'not an internal error');
  for (const p of parts) assert.match(lines[0]!, typeof p === 'string' ? new RegExp(p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) : p);
}
