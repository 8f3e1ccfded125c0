/**
 * Calibration: token sequences (sampled, seeded, from a text file, or given explicitly), and the
 * input statistics Σ x xᵀ of chosen linear maps computed on them with ONNX Runtime (see
 * model/graph/capture.ts). Statistics are computed on the model's current weights, so a later recipe
 * step sees the earlier steps' effect.
 *
 * Two ways to walk a step's targets (`walkCalibration`):
 *   one-shot    every target sees the inputs of the model as the step began (one pass);
 *   sequential  block by block, as the reference code of GPTQ (GPTQModel `true_sequential`),
 *               SparseGPT and Wanda runs: the inputs of block l are computed with blocks < l already
 *               compressed, and, at `group` granularity, the maps of sequential group g of a block
 *               (LinearInfo.seqGroup) with groups < g compressed too. Only one block runs per pass:
 *               the residual stream entering the current block is kept per batch, and advanced
 *               through the block once the block is done (Family.body with a block range).
 *
 * Pads: Dikē drops pad positions from the statistics (the default); `keepPads` lets them in as
 * GPTQModel does when it is handed right-padded batches (their activations enter H like any token).
 */
import { readFileSync } from 'node:fs';
import ort from 'onnxruntime-node';
import type { BlockRange } from '../model/arch/types.js';
import { DikeError } from '../errors.js';
import type { LinearInfo } from '../model/arch/types.js';
import type { Checkpoint, Param } from '../model/checkpoint.js';
import { addGramBlocks, keepOutputs, mirrorLower, withLinearInputGrams, type GramOutput } from '../model/graph/capture.js';
import { graphToOnnx } from '../model/graph/to-onnx.js';
import { Rng } from '../util/rng.js';
import { sha256Bytes } from '../util/hash.js';
import { buildBodyGraph, buildHeadGraph, gatherRows, ortSessionOptions, padBatch, type ModelLike, type PaddedBatch } from '../runtime/session.js';
import {
  DEFAULT_BATCHING,
  type CalibrationBatching,
  type CalibrationMode,
  type CalibrationSet,
  type CalibrationSpec,
  type CalibrationVisit,
  type InputStats,
  type StatsOptions,
  type WalkOptions,
} from './calibration-types.js';

/** The calibration types, for callers that import them with the functions that make them. */
export * from './calibration-types.js';







function hashSequences(sequences: readonly (readonly number[])[]): string {
  const flat = Int32Array.from(sequences.flat());
  return sha256Bytes(new Uint8Array(flat.buffer));
}

/** A calibration set from explicit token sequences (no special tokens added: they are used as given). */
export function calibrationFromSequences(sequences: number[][], source: string, batching: Partial<CalibrationBatching> = {}): CalibrationSet {
  const b: CalibrationBatching = { ...DEFAULT_BATCHING, ...batching };
  if (sequences.length === 0) throw new DikeError(source, '', 'no calibration sequence');
  sequences.forEach((s, i) => {
    if (s.length === 0) throw new DikeError(source, `sequence ${i + 1}`, 'is empty');
  });
  if (!(Number.isInteger(b.rows) && b.rows > 0)) throw new DikeError(source, 'batch size', `expected a positive integer, found ${b.rows}`);
  if (b.paired && (sequences.length % 2 !== 0 || b.rows % 2 !== 0)) {
    throw new DikeError(source, '', `paired calibration needs an even number of sequences and an even batch size, found ${sequences.length} and ${b.rows}`);
  }
  return { sequences, hash: hashSequences(sequences), spec: { tokens: source }, batching: b };
}

/**
 * Token sequences from a JSON file: a list of lists of token ids, or { "sequences": [[…], …] }.
 * The ids are used as given (add BOS/CLS yourself if the protocol wants them).
 */
export function readTokenCalibration(file: string, batching: Partial<CalibrationBatching> = {}): CalibrationSet {
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new DikeError(file, '', code === 'ENOENT' ? 'calibration tokens: file not found' : `calibration tokens: ${(e as Error).message.split('\n')[0]}`);
  }
  const list = Array.isArray(doc) ? doc : typeof doc === 'object' && doc !== null ? (doc as Record<string, unknown>)['sequences'] : undefined;
  if (!Array.isArray(list)) throw new DikeError(file, '', 'expected a list of token-id lists, or { "sequences": [[…], …] }');
  const sequences = list.map((s, i) => {
    if (!Array.isArray(s) || s.some((t) => !Number.isInteger(t) || (t as number) < 0)) throw new DikeError(file, `sequence ${i + 1}`, 'expected a list of non-negative integer token ids');
    return s as number[];
  });
  return calibrationFromSequences(sequences, file, batching);
}

/**
 * `samples` sequences of exactly `seqLen` tokens (fewer only if the file is shorter): each starts at
 * a seeded random line and takes following lines until long enough. BERT-style models get
 * [CLS] … [SEP]; causal models BOS + text, as they see text when scored.
 */
export function sampleCalibration(ckpt: Pick<Checkpoint, 'tokenizer' | 'task' | 'rawConfig'>, spec: CalibrationSpec): CalibrationSet {
  let text: string;
  try {
    text = readFileSync(spec.file, 'utf8');
  } catch (e) {
    throw new DikeError(spec.file, '', `calibration text (--calibration): ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : (e as Error).message}`);
  }
  const lines = text.split(/\r?\n/).filter((l) => l.trim() !== '');
  if (lines.length === 0) throw new DikeError(spec.file, '', 'calibration text is empty');
  const rng = new Rng(spec.seed);
  const tok = ckpt.tokenizer;
  const causal = ckpt.task === 'causal-lm';
  const bos = typeof ckpt.rawConfig['bos_token_id'] === 'number' ? (ckpt.rawConfig['bos_token_id'] as number) : tok.special.bos ?? tok.special.eos;
  const sequences: number[][] = [];
  for (let s = 0; s < spec.samples; s++) {
    let line = rng.int(lines.length);
    let ids: number[] = [];
    const body = causal ? spec.seqLen - 1 : spec.seqLen - 2;
    for (let guard = 0; ids.length < body && guard < lines.length; guard++) {
      ids = ids.concat(tok.encode((ids.length > 0 ? ' ' : '') + lines[line]!, { addSpecialTokens: false }).ids);
      line = (line + 1) % lines.length;
    }
    ids = ids.slice(0, body);
    if (causal) sequences.push(bos === undefined ? ids : [bos, ...ids]);
    else sequences.push([tok.special.cls ?? 101, ...ids, tok.special.sep ?? 102]);
  }
  return { sequences, hash: hashSequences(sequences), spec, batching: DEFAULT_BATCHING };
}


interface CalBatch {
  batch: PaddedBatch;
  /** Positions that enter the statistics. */
  tokens: number;
  /** [row, position] of those positions (the rows fed to head graphs). */
  at: [number, number][];
  /** Pairs in the batch and positions counted for them. */
  pairs: number;
  pairTokens: number;
}

function batchesOf(calib: CalibrationSet): CalBatch[] {
  const { rows, keepPads, padId, paired } = calib.batching;
  const out: CalBatch[] = [];
  for (let start = 0; start < calib.sequences.length; start += rows) {
    const seqs = calib.sequences.slice(start, start + rows);
    const batch = padBatch(seqs, padId);
    const at: [number, number][] = [];
    batch.lengths.forEach((n, r) => {
      for (let p = 0; p < (keepPads ? batch.seq : n); p++) at.push([r, p]);
    });
    let pairs = 0;
    let pairTokens = 0;
    if (paired) {
      for (let r = 0; r + 1 < batch.batch; r += 2) {
        pairs++;
        pairTokens += keepPads ? batch.seq : Math.min(batch.lengths[r]!, batch.lengths[r + 1]!);
      }
    }
    out.push({ batch, tokens: at.length, at, pairs, pairTokens });
  }
  return out;
}

/**
 * Sums of Gram matrices over batches, in float64, once per distinct input (maps that read the same
 * input share the sum; each gets its own copy at the end). Only the upper staircase that the graph
 * computes is added per batch; the lower triangle is mirrored once, in `stats`.
 */
class StatsSum {
  private readonly sums = new Map<GramOutput, Float64Array>();
  private readonly pairSums = new Map<GramOutput, Float64Array>();
  private tokens = 0;
  private pairs = 0;
  private pairTokens = 0;
  constructor(
    private readonly grams: ReadonlyMap<string, GramOutput>,
    private readonly pairGrams: ReadonlyMap<string, GramOutput>,
  ) {}
  /** The outputs a run must fetch. */
  fetches(): string[] {
    const outs = new Set([...this.grams.values(), ...this.pairGrams.values()]);
    return [...outs].flatMap((g) => g.blocks.map((b) => b.name));
  }
  add(out: ort.InferenceSession.ReturnType, tokens: number, pair?: { pairs: number; tokens: number }): void {
    const data = (name: string): Float32Array => out[name]!.data as Float32Array;
    const addAll = (outs: Iterable<GramOutput>, sums: Map<GramOutput, Float64Array>): void => {
      for (const g of new Set(outs)) {
        let s = sums.get(g);
        if (s === undefined) sums.set(g, (s = new Float64Array(g.dim * g.dim)));
        addGramBlocks(s, g, data);
      }
    };
    addAll(this.grams.values(), this.sums);
    this.tokens += tokens;
    if (pair !== undefined) {
      addAll(this.pairGrams.values(), this.pairSums);
      this.pairs += pair.pairs;
      this.pairTokens += pair.tokens;
    }
  }
  /** The statistics per weight (nothing for an empty calibration set). */
  stats(): Map<string, InputStats> {
    const done = new Set<Float64Array>();
    const take = (g: GramOutput, sums: Map<GramOutput, Float64Array>): Float64Array => {
      const s = sums.get(g)!;
      if (done.has(s)) return s.slice();
      mirrorLower(s, g);
      done.add(s);
      return s;
    };
    const out = new Map<string, InputStats>();
    for (const [w, g] of this.grams) {
      if (!this.sums.has(g)) continue;
      const s: InputStats = { gram: take(g, this.sums), tokens: this.tokens, dim: g.dim };
      const p = this.pairGrams.get(w);
      if (p !== undefined && this.pairSums.has(p)) Object.assign(s, { pairGram: take(p, this.pairSums), pairs: this.pairs, pairTokens: this.pairTokens });
      out.set(w, s);
    }
    return out;
  }
}

/**
 * Capture sessions run without ONNX Runtime's CPU memory arena. A capture run returns every Gram
 * block as an output (≈ 300 MB of float32 per run for BERT-base-size's 72 maps), and the arena
 * keeps such buffers for the session's life on top of the copies handed to JavaScript: peak RSS of
 * the one-shot capture of BERT-base-size's 72 maps on 32 × 128 tokens fell from 3,470 to 2,908 MiB
 * (bench/memory.ts measures it per workload). The statistics are the same bit for bit (where memory
 * comes from does not change a kernel); test/gram-capture.test.ts and the GPTQ goldens pin them.
 */
function captureSessionOptions(threads: number | undefined): ort.InferenceSession.SessionOptions {
  return { ...ortSessionOptions(threads), enableCpuMemArena: false };
}

/**
 * One pass of the body over every calibration batch: blocks `range` (the whole body when undefined)
 * with Gram outputs for `weights`; returns the statistics and, when asked, the hidden state leaving
 * the range per batch ([batch, seq, hidden]). `hiddenIn` is the residual stream entering the range
 * (needed when it does not start at block 0).
 */
async function bodyPass(
  m: ModelLike,
  calib: CalibrationSet,
  batches: readonly CalBatch[],
  range: BlockRange | undefined,
  hiddenIn: readonly Float32Array[] | undefined,
  weights: readonly string[],
  dimOf: Map<string, number>,
  wantHidden: boolean,
  opts: StatsOptions,
): Promise<{ stats: Map<string, InputStats>; hidden: Float32Array[] }> {
  const pairs = opts.pairs === true;
  if (pairs && !calib.batching.paired) throw new DikeError('calibration', '', 'pair statistics need a paired calibration set');
  const capture = withLinearInputGrams(buildBodyGraph(m, range), weights, calib.batching.keepPads ? undefined : 'attention_mask', pairs ? { seqOf: 'input_ids' } : undefined, {
    dims: dimOf,
    ...(opts.gramBlock !== undefined ? { block: opts.gramBlock } : {}),
  });
  const outName = `hidden.${range?.to ?? m.shape.numLayers}`;
  const sum = new StatsSum(capture.grams, capture.pairGrams);
  const fetches = sum.fetches();
  if (wantHidden) fetches.push(outName);
  // Only what the fetches need is built and run (a group's pass stops at the group's input).
  const session = await ort.InferenceSession.create(graphToOnnx(keepOutputs(capture.graph, fetches)), captureSessionOptions(opts.threads));
  const hidden: Float32Array[] = [];
  const H = m.shape.hiddenSize;
  try {
    for (const [i, cb] of batches.entries()) {
      const dims = [cb.batch.batch, cb.batch.seq];
      const feeds: Record<string, ort.Tensor> = {
        input_ids: new ort.Tensor('int64', cb.batch.inputIds, dims),
        attention_mask: new ort.Tensor('int64', cb.batch.attentionMask, dims),
      };
      if (range !== undefined && range.from > 0) feeds['hidden_in'] = new ort.Tensor('float32', hiddenIn![i]!, [...dims, H]);
      const out = await session.run(feeds, fetches);
      sum.add(out, cb.tokens, pairs ? { pairs: cb.pairs, tokens: cb.pairTokens } : undefined);
      if (wantHidden) hidden.push(out[outName]!.data as Float32Array);
    }
  } finally {
    await session.release();
  }
  return { stats: sum.stats(), hidden };
}

/** Statistics of head targets (layer −1) from the last hidden state of every batch. */
async function headPass(
  m: ModelLike,
  batches: readonly CalBatch[],
  hiddenL: readonly Float32Array[],
  weights: readonly string[],
  dimOf: Map<string, number>,
  opts: StatsOptions,
): Promise<Map<string, InputStats>> {
  if (opts.pairs) throw new DikeError('calibration', weights[0] ?? '', 'pair statistics are not available for head matrices (outside the blocks); leave them out of the scope');
  const H = m.shape.hiddenSize;
  const head = withLinearInputGrams(buildHeadGraph(m, 'logits'), weights, undefined, undefined, {
    dims: dimOf,
    ...(opts.gramBlock !== undefined ? { block: opts.gramBlock } : {}),
  });
  const session = await ort.InferenceSession.create(graphToOnnx(head.graph), captureSessionOptions(opts.threads));
  const sum = new StatsSum(head.grams, new Map());
  const fetches = sum.fetches();
  try {
    for (const [i, cb] of batches.entries()) {
      const rows = gatherRows(hiddenL[i]!, cb.batch.seq, H, cb.at);
      const out = await session.run({ rows: new ort.Tensor('float32', rows, [cb.at.length, H]) }, fetches);
      sum.add(out, cb.at.length);
    }
  } finally {
    await session.release();
  }
  return sum.stats();
}

/** Σ x xᵀ of each target's input over every calibration token, on the given (current) weights (one-shot). */
export async function inputStats(
  model: ModelLike,
  params: Map<string, Param>,
  targets: readonly LinearInfo[],
  calib: CalibrationSet,
  opts: StatsOptions = {},
): Promise<Map<string, InputStats>> {
  const m: ModelLike = { ...model, params };
  const dimOf = new Map(targets.map((t) => [t.weight, t.inDim]));
  const batches = batchesOf(calib);
  const bodyTargets = targets.filter((t) => t.layer >= 0).map((t) => t.weight);
  const headTargets = targets.filter((t) => t.layer < 0).map((t) => t.weight);
  const body = await bodyPass(m, calib, batches, undefined, undefined, bodyTargets, dimOf, headTargets.length > 0, opts);
  if (headTargets.length === 0) return body.stats;
  const head = await headPass(m, batches, body.hidden, headTargets, dimOf, opts);
  return new Map([...body.stats, ...head]);
}



/**
 * Hand the targets to `visit` with their input statistics, one-shot (all at once, on the weights as
 * they are now) or sequentially (block by block, group by group, each on the weights as the earlier
 * visits left them). The weights are read from `params` at each pass, so `visit` compresses in place.
 */
export async function walkCalibration(
  model: ModelLike,
  params: Map<string, Param>,
  targets: readonly LinearInfo[],
  calib: CalibrationSet,
  walk: WalkOptions,
  visit: CalibrationVisit,
): Promise<void> {
  if (walk.mode === 'one-shot') {
    await visit([...targets], await inputStats(model, params, targets, calib, walk));
    return;
  }
  const m: ModelLike = { ...model, params };
  const dimOf = new Map(targets.map((t) => [t.weight, t.inDim]));
  const batches = batchesOf(calib);
  const groupsOf = (ts: LinearInfo[]): LinearInfo[][] => {
    if (walk.granularity === 'block') return [ts];
    const ids = [...new Set(ts.map((t) => t.seqGroup))].sort((a, b) => a - b);
    return ids.map((g) => ts.filter((t) => t.seqGroup === g));
  };
  const layers = [...new Set(targets.filter((t) => t.layer >= 0).map((t) => t.layer))].sort((a, b) => a - b);
  let hidden: Float32Array[] | undefined; // the residual stream entering block `at`, per batch
  let at = 0;
  for (const l of layers) {
    if (l > at) {
      hidden = (await bodyPass(m, calib, batches, { from: at, to: l }, hidden, [], dimOf, true, walk)).hidden;
      at = l;
    }
    for (const g of groupsOf(targets.filter((t) => t.layer === l))) {
      const { stats } = await bodyPass(m, calib, batches, { from: l, to: l + 1 }, hidden, g.map((t) => t.weight), dimOf, false, walk);
      await visit(g, stats);
    }
  }
  const head = targets.filter((t) => t.layer < 0);
  if (head.length > 0) {
    const L = model.shape.numLayers;
    const hiddenL = (await bodyPass(m, calib, batches, { from: at, to: L }, hidden, [], dimOf, true, walk)).hidden;
    for (const g of groupsOf(head)) await visit(g, await headPass(m, batches, hiddenL, g.map((t) => t.weight), dimOf, walk));
  }
}
