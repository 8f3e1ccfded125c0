/**
 * Running a checkpoint on onnxruntime-node. Three graphs are built from the same weights:
 *   body      input_ids, attention_mask → hidden.0 … hidden.L
 *   logits    rows [n, hidden] → logits [n, outputs]
 *   logprobs  rows [n, hidden], targets [n] → log softmax(logits)[target]  [n]
 * so that the vocabulary projection runs only at the rows a scorer asks for.
 *
 * Execution modes (RuntimeOptions.execution):
 *   simulated (default)  float32 kernels over the stored weights (a quantized matrix is stored as its
 *                        dequantized values); dynamic-int8 matrices also fake-quantize their input.
 *   deployed             quantized matrices (quantization.safetensors) run on ONNX Runtime's integer
 *                        kernels: MatMulNBits, DynamicQuantizeMatMul (runtime/deploy.ts).
 */
import ort from 'onnxruntime-node';
import type { Checkpoint } from '../model/checkpoint.js';
import { weightSource } from '../model/checkpoint.js';
import { GraphBuilder } from '../model/graph/build.js';
import { graphToOnnx } from '../model/graph/to-onnx.js';
import type { Graph } from '../model/graph/ir.js';
import type { BlockRange } from '../model/arch/types.js';
import { DikeError } from '../errors.js';
import type { QuantState } from '../model/quant.js';
import { checkQuantized, deployGraph, fakeQuantizeActivations, QUANTIZATION_FILE, readQuantization, readQuantizationInfo, type DeployOptions, type Execution } from './deploy.js';

export interface RuntimeOptions {
  /** Intra-op threads (default: ORT's choice, all physical cores). */
  threads?: number;
  /** 'simulated' (default) or 'deployed' (integer kernels for quantized matrices). */
  execution?: Execution;
  /** Integer forms by weight name; default: the model directory's quantization.safetensors. */
  quantized?: ReadonlyMap<string, QuantState>;
  deploy?: DeployOptions;
}

/** What a graph needs to know to run in a mode: the integer forms, and where they came from. */
export interface ExecutionPlan {
  execution: Execution;
  /** Integer forms (deployed; simulated execution does not read the codes). */
  quantized: ReadonlyMap<string, QuantState>;
  /** Weights whose input is quantized at run time (dynamic int8). */
  dynamicActivations: ReadonlySet<string>;
  deploy: DeployOptions;
  /** Names the integer forms' source in errors. */
  file: string;
}

/**
 * Resolve the execution mode for a model: read its integer forms (unless given) and, when deployed,
 * check that they reproduce the float weights. Deployed execution of a model without quantized
 * matrices is an error rather than a silent float run.
 */
export function executionPlan(m: ModelLike, opts: Pick<RuntimeOptions, 'execution' | 'quantized' | 'deploy'> = {}): ExecutionPlan {
  const execution = opts.execution ?? 'simulated';
  if (execution !== 'simulated' && execution !== 'deployed') throw new DikeError(m.dir, 'execution', `expected simulated or deployed, found ${JSON.stringify(execution)}`);
  const file = opts.quantized !== undefined ? `${m.dir} (integer forms given in memory)` : `${m.dir}/${QUANTIZATION_FILE}`;
  const dynamic = (info: ReadonlyMap<string, { dynamicActivations?: boolean }>): Set<string> =>
    new Set([...info].filter(([, s]) => s.dynamicActivations === true).map(([k]) => k));
  if (execution === 'simulated') {
    const info = opts.quantized ?? readQuantizationInfo(m.dir) ?? new Map<string, QuantState>();
    return { execution, quantized: new Map(), dynamicActivations: dynamic(info), deploy: opts.deploy ?? {}, file };
  }
  const quantized = opts.quantized ?? readQuantization(m.dir) ?? new Map<string, QuantState>();
  if (quantized.size === 0) {
    throw new DikeError(m.dir, '', `the model has no quantized matrices (no ${QUANTIZATION_FILE}), so there is nothing to deploy on integer kernels; run it simulated, or compress it with a quantization method first`);
  }
  checkQuantized(quantized, m.family.linears(m.config, m.task), m.params, file);
  return { execution, quantized, dynamicActivations: dynamic(quantized), deploy: opts.deploy ?? {}, file };
}

/** A graph as it runs in the plan's mode: integer kernels (deployed) or fake-quantized activations (simulated). */
export function planGraph(g: Graph, plan: ExecutionPlan): Graph {
  if (plan.execution === 'deployed') return deployGraph(g, plan.quantized, plan.deploy, plan.file).graph;
  return plan.dynamicActivations.size === 0 ? g : fakeQuantizeActivations(g, plan.dynamicActivations);
}

export type ModelLike = Pick<Checkpoint, 'family' | 'config' | 'task' | 'shape' | 'params' | 'dir' | 'weightFiles'>;

/** The body graph; with `blocks`, only those blocks (input hidden_in, output hidden.<to>; see Family.body). */
export function buildBodyGraph(m: ModelLike, blocks?: BlockRange): Graph {
  const b = new GraphBuilder(blocks ? `body-${blocks.from}-${blocks.to}` : 'body', weightSource(m));
  m.family.body(b, m.config, blocks);
  return b.graph;
}

export function buildHeadGraph(m: ModelLike, kind: 'logits' | 'logprobs'): Graph {
  const b = new GraphBuilder(`head-${kind}`, weightSource(m));
  const H = m.shape.hiddenSize;
  const rows = b.input('rows', 'float32', ['n', H]);
  const logits = m.family.head(b, m.config, m.task, rows);
  if (kind === 'logits') {
    b.output(logits, 'logits', 'float32', ['n', m.shape.outputSize]);
  } else {
    const targets = b.input('targets', 'int64', ['n']);
    const lsm = b.logSoftmax(logits, -1);
    const picked = b.gatherElements(lsm, b.unsqueeze(targets, [1]), 1);
    b.output(b.squeeze(picked, [1]), 'logprobs', 'float32', ['n']);
  }
  return b.graph;
}

/**
 * ONNX Runtime session options used for every Dikē graph. Intra-op threads do not spin while idle:
 * a runner alternates between several sessions (body, heads) and JavaScript work, and spinning pools
 * starve each other on few cores (measured in bench/: 2–3× faster on 2 cores with spinning off).
 */
export function ortSessionOptions(threads?: number): ort.InferenceSession.SessionOptions {
  const o: ort.InferenceSession.SessionOptions = {
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
    interOpNumThreads: 1,
    extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
  };
  if (threads !== undefined) o.intraOpNumThreads = threads;
  // Per-operator timings for bench/profile.ts: ORT writes <prefix>_<date>.json when a session ends.
  const profile = process.env['DIKE_ORT_PROFILE'];
  if (profile !== undefined && profile !== '') {
    o.enableProfiling = true;
    o.profileFilePrefix = profile;
  }
  return o;
}

function sessionOptions(opts: RuntimeOptions): ort.InferenceSession.SessionOptions {
  return ortSessionOptions(opts.threads);
}

/** A right-padded batch of token id sequences. */
export interface PaddedBatch {
  batch: number;
  seq: number;
  lengths: number[];
  inputIds: BigInt64Array;
  attentionMask: BigInt64Array;
}

export function padBatch(seqs: readonly (readonly number[])[], padId: number): PaddedBatch {
  const batch = seqs.length;
  const seq = Math.max(1, ...seqs.map((s) => s.length));
  const inputIds = new BigInt64Array(batch * seq).fill(BigInt(padId));
  const attentionMask = new BigInt64Array(batch * seq);
  seqs.forEach((s, r) => {
    for (let j = 0; j < s.length; j++) {
      inputIds[r * seq + j] = BigInt(s[j]!);
      attentionMask[r * seq + j] = 1n;
    }
  });
  return { batch, seq, lengths: seqs.map((s) => s.length), inputIds, attentionMask };
}

/** Rows per head run in ModelRunner.logits (see logitsInto). */
export const HEAD_CHUNK_ROWS = 128;

export class ModelRunner {
  private heads = new Map<'logits' | 'logprobs', Promise<ort.InferenceSession>>();

  private constructor(
    readonly model: ModelLike,
    private readonly body: ort.InferenceSession,
    private readonly opts: RuntimeOptions,
    readonly plan: ExecutionPlan,
  ) {}

  static async create(model: ModelLike, opts: RuntimeOptions = {}): Promise<ModelRunner> {
    const plan = executionPlan(model, opts);
    const body = await ort.InferenceSession.create(graphToOnnx(planGraph(buildBodyGraph(model), plan)), sessionOptions(opts));
    return new ModelRunner(model, body, opts, plan);
  }

  get numLayers(): number {
    return this.model.shape.numLayers;
  }

  get hiddenSize(): number {
    return this.model.shape.hiddenSize;
  }

  private head(kind: 'logits' | 'logprobs'): Promise<ort.InferenceSession> {
    let s = this.heads.get(kind);
    if (s === undefined) {
      s = ort.InferenceSession.create(graphToOnnx(planGraph(buildHeadGraph(this.model, kind), this.plan)), sessionOptions(this.opts));
      this.heads.set(kind, s);
    }
    return s;
  }

  /**
   * Hidden states of a padded batch: for each requested layer index (0 = embeddings, L = last, as
   * HF's hidden_states), a Float32Array [batch, seq, hidden].
   */
  async hidden(batch: PaddedBatch, layers: readonly number[] = [this.numLayers]): Promise<Float32Array[]> {
    // An id the embedding cannot index must not reach ONNX Runtime's Gather (an internal error there).
    const vocab = BigInt(this.model.shape.vocabSize);
    const ids = batch.inputIds;
    for (let i = 0; i < ids.length; i++) {
      if (ids[i]! < 0n || ids[i]! >= vocab) {
        const row = Math.floor(i / batch.seq);
        throw new DikeError(this.model.dir, `batch row ${row + 1}, position ${i % batch.seq}`, `token id ${ids[i]} is outside the vocabulary (vocab_size ${vocab})`);
      }
    }
    const dims = [batch.batch, batch.seq];
    const feeds = {
      input_ids: new ort.Tensor('int64', batch.inputIds, dims),
      attention_mask: new ort.Tensor('int64', batch.attentionMask, dims),
    };
    const names = layers.map((l) => {
      if (!Number.isInteger(l) || l < 0 || l > this.numLayers) throw new RangeError(`hidden layer ${l} outside 0..${this.numLayers}`);
      return `hidden.${l}`;
    });
    const out = await this.body.run(feeds, names);
    return names.map((n) => out[n]!.data as Float32Array);
  }

  /** Head logits for n rows of hidden states ([n, hidden] row-major). */
  async logits(rows: Float32Array, n: number): Promise<Float32Array> {
    const out = new Float32Array(n * this.model.shape.outputSize);
    await this.logitsInto(rows, n, out);
    return out;
  }

  /**
   * The head over n rows, written by ONNX Runtime straight into `out` ([n, outputs]), HEAD_CHUNK_ROWS
   * rows per run. A row's logits do not depend on the other rows of its run (bit for bit: MLAS
   * splits a product over output rows and columns, never over the inner dimension; test/batching),
   * and the chunks keep the [rows, V] product in cache: measured on 1,280 rows of small-bert-mlm's
   * head (V = 30,522, 2 threads), 258–264 ms CPU in chunks of 128 against 326–371 ms in one run.
   */
  private async logitsInto(rows: Float32Array, n: number, out: Float32Array): Promise<void> {
    if (n === 0) return;
    const s = await this.head('logits');
    const H = this.hiddenSize;
    const V = this.model.shape.outputSize;
    for (let i = 0; i < n; i += HEAD_CHUNK_ROWS) {
      const m = Math.min(HEAD_CHUNK_ROWS, n - i);
      await s.run({ rows: new ort.Tensor('float32', rows.subarray(i * H, (i + m) * H), [m, H]) }, { logits: new ort.Tensor('float32', out.subarray(i * V, (i + m) * V), [m, V]) });
    }
  }

  /**
   * Head logits at every real (unpadded) token of a padded batch: [Σ lengths, outputs], row r's
   * tokens in order, then row r+1's. The body runs once on the batch; the head runs on the real rows
   * only (a right-padded batch of 8–32 sentences is a third to a half padding). Equal, bit for bit,
   * to `logits` over all B·S rows at those rows (test/batching.test.ts).
   */
  async tokenLogits(batch: PaddedBatch): Promise<Float32Array> {
    const [last] = await this.hidden(batch, [this.numLayers]);
    const at: [number, number][] = [];
    batch.lengths.forEach((len, r) => {
      for (let p = 0; p < len; p++) at.push([r, p]);
    });
    return this.logits(gatherRows(last!, batch.seq, this.hiddenSize, at), at.length);
  }

  /** log softmax(head(rows))[target] for each of n rows. */
  async logprobs(rows: Float32Array, targets: readonly number[]): Promise<Float32Array> {
    const n = targets.length;
    if (n === 0) return new Float32Array(0);
    const s = await this.head('logprobs');
    const out = await s.run({
      rows: new ort.Tensor('float32', rows, [n, this.hiddenSize]),
      targets: new ort.Tensor('int64', BigInt64Array.from(targets, (t) => BigInt(t)), [n]),
    });
    return out['logprobs']!.data as Float32Array;
  }

  async dispose(): Promise<void> {
    await this.body.release();
    for (const s of this.heads.values()) await (await s).release();
  }
}

/** Copy rows (batchRow, position) of a [batch, seq, hidden] array into a [n, hidden] array. */
export function gatherRows(hidden: Float32Array, seq: number, width: number, at: readonly (readonly [number, number])[]): Float32Array {
  const out = new Float32Array(at.length * width);
  at.forEach(([r, p], i) => {
    const start = (r * seq + p) * width;
    out.set(hidden.subarray(start, start + width), i * width);
  });
  return out;
}

/**
 * Group items into batches of similar length (length bucketing): sort by length, then fill each
 * batch while rows·maxLength stays within `maxTokens` (a batch always takes at least one item) and
 * the padding stays within `maxPadding` × the batch's real tokens (default: any padding). With
 * `maxPadding` 0 a batch holds items of one length only, so no row is ever padded: bench/ measured a
 * padded token to cost as much as a real one, and attention grows with the padded length squared.
 * Returns groups of item indices; every index appears exactly once.
 */
export function lengthBuckets(lengths: readonly number[], rowsPerItem: readonly number[], maxTokens: number, maxPadding = Number.POSITIVE_INFINITY): number[][] {
  const order = lengths.map((_, i) => i).sort((a, b) => lengths[a]! - lengths[b]! || a - b);
  const groups: number[][] = [];
  let cur: number[] = [];
  let rows = 0;
  let maxLen = 0;
  let real = 0;
  for (const i of order) {
    const newRows = rows + rowsPerItem[i]!;
    const newMax = Math.max(maxLen, lengths[i]!);
    const newReal = real + rowsPerItem[i]! * lengths[i]!;
    if (cur.length > 0 && (newRows * newMax > maxTokens || newRows * newMax - newReal > maxPadding * newReal)) {
      groups.push(cur);
      cur = [];
      rows = 0;
      maxLen = 0;
      real = 0;
    }
    cur.push(i);
    rows += rowsPerItem[i]!;
    maxLen = Math.max(maxLen, lengths[i]!);
    real += rowsPerItem[i]! * lengths[i]!;
  }
  if (cur.length > 0) groups.push(cur);
  return groups;
}
