/**
 * A training step on onnxruntime-node: holds the parameters and AdamW state in JavaScript memory,
 * feeds them with a batch to the step graph (step.ts) and takes the updated values back.
 */
import ort from 'onnxruntime-node';
import { graphToOnnx } from '../model/graph/to-onnx.js';
import { ortSessionOptions } from '../runtime/session.js';
import type { Graph } from '../model/graph/ir.js';
import { segmentFeeds } from './grad-rules.js';
import { adamScalars, buildTrainStep, type AdamWSettings, type ModelForTraining, type TrainStepSpec } from './step.js';

/** One batch in the step graph's terms (see step.ts). */
export interface StepBatch {
  batch: number;
  seq: number;
  inputIds: BigInt64Array;
  attentionMask: BigInt64Array;
  rows: BigInt64Array;
  targets: BigInt64Array;
  weights: Float32Array;
  teacherLogits?: Float32Array;
  teacherHidden?: ReadonlyMap<number, Float32Array>;
  hiddenScale?: number;
  /** Counterfactual gap penalty inputs (TrainStepSpec.counterfactual). */
  cfRows?: BigInt64Array;
  cfTargets?: BigInt64Array;
  cfMatrix?: Float32Array;
  cfTeacherGap?: Float32Array;
  /** Pseudo-log-likelihood contrast inputs (TrainStepSpec.contrast; contrast.ts). */
  pcRows?: BigInt64Array;
  pcTargets?: BigInt64Array;
  pcMatrix?: Float32Array;
  pcPairWeight?: Float32Array;
}

/** Loss-row counts are rounded up to a multiple of this (one step graph per count in use). */
export const ROW_BUCKET = 32;

export interface StepResult {
  loss: number;
  gradNorm: number;
}

export class TrainSession {
  /** Current values of the trained parameters. */
  readonly params = new Map<string, Float32Array>();
  readonly m = new Map<string, Float32Array>();
  readonly v = new Map<string, Float32Array>();
  /** Number of updates applied (t of the next update is step + 1). */
  step = 0;

  /** Second buffers the next update writes into (by output name). */
  private readonly spare = new Map<string, Float32Array>();
  /** Per step graph: index inputs whose segment feeds (order, lo, hi, unique) it also takes, and their slot counts. */
  private readonly segmentInputs = new Map<number, [string, { slots: number }][]>();
  /** Step graphs by number of loss rows (see `rowsFor`). */
  private readonly sessions = new Map<number, Promise<ort.InferenceSession>>();

  private constructor(
    readonly model: ModelForTraining,
    readonly spec: TrainStepSpec,
    readonly trained: string[],
    session: ort.InferenceSession,
    private readonly threads: number | undefined,
  ) {
    this.sessions.set(spec.rows, Promise.resolve(session));
    for (const k of trained) {
      const p = model.params.get(k)!;
      this.params.set(k, Float32Array.from(p.data));
      if (spec.optimizer !== 'grads') {
        this.m.set(k, new Float32Array(p.data.length));
        this.v.set(k, new Float32Array(p.data.length));
      }
    }
  }

  static async create(model: ModelForTraining, spec: TrainStepSpec, threads?: number): Promise<TrainSession> {
    const step = buildTrainStep(model, spec);
    const session = await ort.InferenceSession.create(graphToOnnx(step.graph), ortSessionOptions(threads));
    const t = new TrainSession(model, spec, step.trained, session, threads);
    t.segmentInputs.set(spec.rows, segmentInputsOf(step.graph));
    return t;
  }

  /**
   * The number of loss rows a batch runs with: its labelled rows rounded up to a multiple of
   * ROW_BUCKET (capped at the graph's capacity). Masked-LM batches label a Binomial number of
   * positions; sizing the vocabulary projection to the batch instead of the worst case saves about a
   * third of the head's work, for a handful of step graphs per run.
   */
  rowsFor(x: StepBatch): number {
    let n = x.weights.length;
    while (n > 0 && x.weights[n - 1] === 0) n--;
    return Math.min(x.rows.length, Math.max(ROW_BUCKET, Math.ceil(n / ROW_BUCKET) * ROW_BUCKET));
  }

  private sessionFor(rows: number): Promise<ort.InferenceSession> {
    let s = this.sessions.get(rows);
    if (s === undefined) {
      const graph = buildTrainStep(this.model, { ...this.spec, rows }).graph;
      this.segmentInputs.set(rows, segmentInputsOf(graph));
      s = ort.InferenceSession.create(graphToOnnx(graph), ortSessionOptions(this.threads));
      this.sessions.set(rows, s);
    }
    return s;
  }

  private shape(k: string): number[] {
    return this.model.params.get(k)!.shape;
  }

  private feeds(x: StepBatch, R: number): Record<string, ort.Tensor> {
    const { batch: B, seq: S } = x;
    if (B !== this.spec.batch || S !== this.spec.seq || x.rows.length !== this.spec.rows) {
      throw new Error(`batch [${B}, ${S}] with ${x.rows.length} rows does not fit the step graph [${this.spec.batch}, ${this.spec.seq}] / ${this.spec.rows}`);
    }
    const f: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', x.inputIds, [B, S]),
      attention_mask: new ort.Tensor('int64', x.attentionMask, [B, S]),
    };
    // A contrast-only step (rows = 0) has no cross-entropy rows.
    if (R > 0) {
      f['rows'] = new ort.Tensor('int64', x.rows.subarray(0, R), [R]);
      f['targets'] = new ort.Tensor('int64', x.targets.subarray(0, R), [R]);
      f['weights'] = new ort.Tensor('float32', x.weights.subarray(0, R), [R]);
    }
    const pc = this.spec.contrast;
    if (pc !== undefined) {
      if (x.pcRows === undefined || x.pcTargets === undefined || x.pcMatrix === undefined || x.pcPairWeight === undefined) throw new Error('contrast step without its copy rows, matrix and pair weights');
      f['pc_rows'] = new ort.Tensor('int64', x.pcRows, [pc.rows]);
      f['pc_targets'] = new ort.Tensor('int64', x.pcTargets, [pc.rows]);
      f['pc_matrix'] = new ort.Tensor('float32', x.pcMatrix, [pc.pairs, pc.rows]);
      f['pc_pair_weight'] = new ort.Tensor('float32', x.pcPairWeight, [pc.pairs]);
    }
    const d = this.spec.distill;
    if (d !== undefined) {
      if (x.teacherLogits === undefined) throw new Error('distillation step without teacher logits');
      const V = this.model.shape.outputSize;
      if (x.teacherLogits.length < R * V) throw new Error(`teacher logits for ${x.teacherLogits.length / V} rows; the step uses ${R}`);
      f['teacher_logits'] = new ort.Tensor('float32', x.teacherLogits.subarray(0, R * V), [R, V]);
      if (d.hiddenPairs !== undefined && d.hiddenPairs.length > 0 && (d.hiddenWeight ?? 0) !== 0) {
        f['hidden_scale'] = new ort.Tensor('float32', new Float32Array([x.hiddenScale ?? 0]), []);
        for (const [, tl] of d.hiddenPairs) {
          const h = x.teacherHidden?.get(tl);
          if (h === undefined) throw new Error(`distillation step without teacher hidden state ${tl}`);
          f[`teacher_hidden.${tl}`] = new ort.Tensor('float32', h, [B, S, this.model.shape.hiddenSize]);
        }
      }
    }
    const cf = this.spec.counterfactual;
    if (cf !== undefined && cf.weight !== 0) {
      if (x.cfRows === undefined || x.cfTargets === undefined || x.cfMatrix === undefined || x.cfTeacherGap === undefined) throw new Error('counterfactual penalty step without its pair rows, matrix and teacher gaps');
      f['cf_rows'] = new ort.Tensor('int64', x.cfRows, [cf.rows]);
      f['cf_targets'] = new ort.Tensor('int64', x.cfTargets, [cf.rows]);
      f['cf_matrix'] = new ort.Tensor('float32', x.cfMatrix, [cf.pairs, cf.rows]);
      f['cf_teacher_gap'] = new ort.Tensor('float32', x.cfTeacherGap, [cf.pairs]);
    }
    for (const k of this.trained) f[k] = new ort.Tensor('float32', this.params.get(k)!, this.shape(k));
    // Companions of indices the embedding-gradient rule needs (grad-rules.ts, Gather).
    for (const [name, info] of this.segmentInputs.get(R) ?? []) {
      const ids = f[name]!.data as BigInt64Array;
      const seg = segmentFeeds(ids, info.slots);
      f[`${name}:order`] = new ort.Tensor('int64', seg.order, [ids.length]);
      for (const k of ['lo', 'hi', 'unique'] as const) f[`${name}:${k}`] = new ort.Tensor('int64', seg[k], [info.slots]);
    }
    return f;
  }

  /** Loss and gradients at the current parameters (a step graph built with optimizer 'grads'). */
  async gradients(x: StepBatch): Promise<StepResult & { grads: Map<string, Float32Array> }> {
    if (this.spec.optimizer !== 'grads') throw new Error('gradients() needs a step graph built with optimizer "grads"');
    const R = this.rowsFor(x);
    const session = await this.sessionFor(R);
    const out = await session.run(this.feeds(x, R));
    const grads = new Map(this.trained.map((k) => [k, out[`grad.${k}`]!.data as Float32Array]));
    return { loss: scalar(out['loss']!), gradNorm: scalar(out['grad_norm']!), grads };
  }

  /** One AdamW update at learning rate `lr`; returns the loss and gradient norm before the update. */
  async update(x: StepBatch, lr: number): Promise<StepResult> {
    const opt = this.spec.optimizer;
    if (opt === 'grads') throw new Error('update() needs a step graph built with an optimizer');
    const t = this.step + 1;
    const R = this.rowsFor(x);
    const session = await this.sessionFor(R);
    const f = this.feeds(x, R);
    for (const [name, value] of Object.entries(adamScalars(opt as AdamWSettings, lr, t))) f[name] = new ort.Tensor('float32', new Float32Array([value]), []);
    for (const k of this.trained) {
      f[`m.${k}`] = new ort.Tensor('float32', this.m.get(k)!, this.shape(k));
      f[`v.${k}`] = new ort.Tensor('float32', this.v.get(k)!, this.shape(k));
    }
    // ONNX Runtime writes the updated tensors straight into a second set of buffers, which then swaps
    // with the first: no per-step allocation or copy of parameters and moments (3 × model size).
    const fetches: Record<string, ort.Tensor | null> = { loss: null, grad_norm: null };
    for (const k of this.trained) {
      for (const [state, prefix] of [[this.params, 'next.'], [this.m, 'next.m.'], [this.v, 'next.v.']] as const) {
        let spare = this.spare.get(prefix + k);
        if (spare === undefined) {
          spare = new Float32Array(state.get(k)!.length);
          this.spare.set(prefix + k, spare);
        }
        fetches[prefix + k] = new ort.Tensor('float32', spare, this.shape(k));
      }
    }
    const out = await session.run(f, fetches);
    for (const k of this.trained) {
      for (const [state, prefix] of [[this.params, 'next.'], [this.m, 'next.m.'], [this.v, 'next.v.']] as const) {
        const written = this.spare.get(prefix + k)!;
        this.spare.set(prefix + k, state.get(k)!);
        state.set(k, written);
      }
    }
    this.step = t;
    return { loss: scalar(out['loss']!), gradNorm: scalar(out['grad_norm']!) };
  }

  async release(): Promise<void> {
    for (const s of this.sessions.values()) await (await s).release();
    this.sessions.clear();
  }
}

function segmentInputsOf(g: Graph): [string, { slots: number }][] {
  return g.inputs.filter((v) => v.name.endsWith(':unique')).map((v) => [v.name.slice(0, -':unique'.length), { slots: Number(v.shape[0]) }]);
}

function scalar(t: ort.Tensor): number {
  return (t.data as Float32Array)[0]!;
}

/**
 * Loss rows from Hugging Face labels ([B][S], −100 = ignored), padded to `rows` entries with weight 0.
 *   masked-lm: every labelled position; causal-lm: position k predicts labels[k+1] (HF shift).
 * Weights are 1/N, so the loss is HF's mean cross-entropy.
 */
export function lossRowsFromLabels(labels: readonly (readonly number[])[], kind: 'masked-lm' | 'causal-lm', rows?: number): Pick<StepBatch, 'rows' | 'targets' | 'weights'> {
  const S = labels[0]?.length ?? 0;
  const picked: [number, number][] = [];
  labels.forEach((row, b) => {
    for (let k = 0; k < S; k++) {
      if (kind === 'masked-lm' && row[k]! !== -100) picked.push([b * S + k, row[k]!]);
      if (kind === 'causal-lm' && k + 1 < S && row[k + 1]! !== -100) picked.push([b * S + k, row[k + 1]!]);
    }
  });
  const R = rows ?? picked.length;
  if (picked.length > R) throw new Error(`${picked.length} labelled positions exceed the ${R} loss rows of the step graph`);
  const out = { rows: new BigInt64Array(R), targets: new BigInt64Array(R), weights: new Float32Array(R) };
  picked.forEach(([r, t], i) => {
    out.rows[i] = BigInt(r);
    out.targets[i] = BigInt(t);
    out.weights[i] = 1 / picked.length;
  });
  return out;
}
