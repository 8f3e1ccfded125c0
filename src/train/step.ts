/**
 * The training-step graph: one ONNX graph that runs the forward pass, the loss, the backward pass
 * (autodiff.ts) and the optimizer update, so that a step is a single onnxruntime call.
 *
 *   inputs   trained parameters (by Hugging Face name), optimizer state m.<name>, v.<name>,
 *            scalars lr_decay = 1 − lr·weight_decay, step_size = lr / (1 − β₁ᵗ), bc2_sqrt = √(1 − β₂ᵗ),
 *            the batch: input_ids, attention_mask [B, S]; rows, targets [R] (int64), weights [R] (float32)
 *            and, when distilling, teacher_logits [R, V] and teacher_hidden.<l> [B, S, H];
 *            for each index input an embedding is gathered by (input_ids, rows), its distinct values
 *            <name>:unique and <name>:inverse (see the Gather rule; TrainSession fills them in).
 *   outputs  loss, grad_norm (before clipping), next.<name>, next.m.<name>, next.v.<name>
 *            (or grad.<name> only, for gradient checks).
 *
 * The loss is a weighted sum over chosen rows: loss = −Σ_r w_r · log softmax(head(h[rows_r]))[targets_r].
 * With w_r = 1/N over the N labelled positions this is Hugging Face's mean cross-entropy (masked LM:
 * the masked positions; causal LM: position k predicts k+1; classification: the [CLS] row), and the
 * vocabulary projection runs only at those rows. Padding rows carry w = 0.
 *
 * AdamW follows torch.optim.AdamW (Loshchilov & Hutter 2019): decoupled decay p ← p·(1 − lr·λ) on
 * matrices only, m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², p ← p − step_size · m / (√v / bc2_sqrt + ε);
 * gradients are first clipped to a global norm as torch.nn.utils.clip_grad_norm_.
 */
import type { Checkpoint } from '../model/checkpoint.js';
import { weightSource } from '../model/checkpoint.js';
import { GraphBuilder } from '../model/graph/build.js';
import type { Graph } from '../model/graph/ir.js';
import { differentiate } from './autodiff.js';
import { foldConstants, inferShapes } from './shapes.js';

export type ModelForTraining = Pick<Checkpoint, 'family' | 'config' | 'task' | 'shape' | 'params' | 'dir' | 'weightFiles'>;

export interface AdamWSettings {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Global gradient-norm clip (torch clip_grad_norm_); undefined = no clipping. */
  maxGradNorm?: number;
}

export const DEFAULT_ADAMW: AdamWSettings = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, maxGradNorm: 1.0 };

export interface DistillTerms {
  /** Softmax temperature T of Hinton et al. 2015; the KD term is scaled by T². */
  temperature: number;
  /** Weight of T²·KL(teacher ‖ student) (the hard-label term gets `ceWeight`). */
  kdWeight: number;
  ceWeight: number;
  /** Hidden-state MSE: student layer → teacher layer (HF hidden-state indices), weighted by `hiddenWeight`. */
  hiddenPairs?: [number, number][];
  hiddenWeight?: number;
}

export interface TrainStepSpec {
  batch: number;
  seq: number;
  /** Number of loss rows R (pad with weight 0). */
  rows: number;
  /** Which parameters train (default: all the graph uses). */
  trainable?: (name: string) => boolean;
  /** Fixed 0/1 masks by parameter name (pruning): gradients and updates keep the zeros. */
  masks?: ReadonlyMap<string, Float32Array>;
  /** 'grads': output gradients only (no optimizer). */
  optimizer: AdamWSettings | 'grads';
  /** Distillation terms (teacher logits and hidden states become inputs). */
  distill?: DistillTerms;
  /**
   * Counterfactual gap penalty (fair distillation and repair, issue 16): K sentence pairs (stereotype,
   * anti-stereotype) sit in the batch; g_k = log P_s(stereotype_k) − log P_s(anti_k) is the student's
   * gap, t_k the teacher's (host-computed; 0 without a teacher), and the loss gains
   *   (weight / K) · Σ_k max(0, g_k² − t_k²)
   * — only the part of the student's gap beyond the teacher's is penalised. Inputs: cf_rows,
   * cf_targets [rows] (int64, like rows/targets: the scored positions of the pair sentences),
   * cf_matrix [pairs, rows] (+1 on sentence k's stereotype rows, −1 on its anti-stereotype rows,
   * 0 on padding) and cf_teacher_gap [pairs].
   */
  counterfactual?: { weight: number; pairs: number; rows: number };
  /**
   * Pseudo-log-likelihood contrast (contrast.ts; masked LMs): every sequence of the batch is a masked
   * copy with one scored row; g = pc_matrix · log P(pc_targets at pc_rows) ([pairs], signed), and the
   * loss gains Σ_k pc_pair_weight_k · softplus(margin − g_k). With `rows` = 0 it is the whole loss.
   */
  contrast?: { margin: number; pairs: number; rows: number };
}

export interface TrainStepGraph {
  graph: Graph;
  /** Trained parameters, in input order. */
  trained: string[];
  /** Parameters that stay constants of the graph. */
  frozen: string[];
  /** Parameters that take weight decay (≥ 2-D). */
  decayed: Set<string>;
}

export function buildTrainStep(m: ModelForTraining, spec: TrainStepSpec): TrainStepGraph {
  const b = new GraphBuilder('train-step', weightSource(m));
  m.family.body(b, m.config);
  const g = b.graph;
  g.outputs = [];
  const { batch: B, seq: S, rows: R } = spec;
  const H = m.shape.hiddenSize;
  const L = m.shape.numLayers;

  const loss = b.scoped('loss', () => {
    const flatHidden = (): string => b.reshape(`hidden.${L}`, b.ints([B * S, H]));
    if (R === 0) {
      if (spec.contrast === undefined || spec.distill !== undefined || spec.counterfactual !== undefined) throw new Error('a step without loss rows needs the contrast term alone');
      return contrastLoss(b, m, flatHidden(), spec.contrast);
    }
    const rows = b.input('rows', 'int64', [R]);
    const targets = b.input('targets', 'int64', [R]);
    const weights = b.input('weights', 'float32', [R]);
    const flat = flatHidden();
    const logits = m.family.head(b, m.config, m.task, b.gather(flat, rows));
    const V = m.shape.outputSize;
    // Hard-label cross-entropy: −Σ w_r log softmax(logits_r)[t_r]
    const crossEntropy = (): string => {
      const [perRow] = b.node('SoftmaxCrossEntropyLoss', [logits, targets], { reduction: 'none' }, 2);
      return b.reduceSum(b.mul(perRow!, weights), [0], false);
    };
    const d = spec.distill;
    const cf = spec.counterfactual;
    const pc = spec.contrast;
    const withPenalty = (x0: string): string => {
      const x = pc !== undefined ? b.add(x0, contrastLoss(b, m, flat, pc)) : x0;
      return cf !== undefined && cf.weight !== 0 ? b.add(x, counterfactualPenalty(b, m, flat, cf)) : x;
    };
    if (d === undefined) return withPenalty(crossEntropy());
    const teacher = b.input('teacher_logits', 'float32', [R, V]);
    const invT = b.scalar(1 / d.temperature);
    const logPt = b.logSoftmax(b.mul(teacher, invT), -1);
    const logQs = b.logSoftmax(b.mul(logits, invT), -1);
    // KL(p_t ‖ q_s) per row = Σ_v p_t (log p_t − log q_s), weighted like the CE rows, times T².
    const klRows = b.reduceSum(b.mul(b.exp(logPt), b.sub(logPt, logQs)), [1], false);
    let total = b.mul(b.reduceSum(b.mul(klRows, weights), [0], false), b.scalar(d.kdWeight * d.temperature * d.temperature));
    if (d.ceWeight !== 0) total = b.add(total, b.mul(crossEntropy(), b.scalar(d.ceWeight)));
    if (d.hiddenPairs !== undefined && d.hiddenPairs.length > 0 && (d.hiddenWeight ?? 0) !== 0) {
      // Σ over real tokens of ‖h_s − h_t‖², scaled by hidden_scale = weight / (real tokens · H) (host-computed).
      const real = b.unsqueeze(b.cast('attention_mask', 'float32'), [2]);
      const scale = b.input('hidden_scale', 'float32', []);
      for (const [sl, tl] of d.hiddenPairs) {
        const th = b.input(`teacher_hidden.${tl}`, 'float32', [B, S, H]);
        const diff = b.mul(b.sub(b.reshape(`hidden.${sl}`, b.ints([B, S, H])), th), real);
        total = b.add(total, b.mul(b.reduceSum(b.mul(diff, diff), [0, 1, 2], false), scale));
      }
    }
    return withPenalty(total);
  });

  // Parameters used by the graph become inputs (trained) or stay initializers (frozen).
  const used = [...m.params.keys()].filter((k) => g.initializers.has(k));
  const trained = used.filter((k) => spec.trainable?.(k) ?? true);
  const frozen = used.filter((k) => !trained.includes(k));
  for (const name of trained) {
    const t = g.initializers.get(name)!;
    g.initializers.delete(name);
    g.inputs.push({ name, type: 'float32', shape: [...t.dims] });
  }
  const facts = inferShapes(g, { input_ids: [B, S], attention_mask: [B, S] });
  const grads = differentiate(g, facts, loss, trained);
  const decayed = new Set(trained.filter((k) => m.params.get(k)!.shape.length >= 2));

  const o = new GraphBuilder('train-step', weightSource(m), g);
  o.scoped('optim', () => {
    o.output(loss, 'loss', 'float32', []);
    // Masks: the gradient of a pruned entry is zero, so Adam never moves it (m = v = 0, decay of 0 is 0).
    const masked = new Map<string, string>();
    for (const name of trained) {
      const mask = spec.masks?.get(name);
      const gr = grads.get(name)!;
      masked.set(name, mask === undefined ? gr : o.mul(gr, o.constant('float32', m.params.get(name)!.shape, mask, 'mask')));
    }
    // The global norm is summed in float64: a float32 sum over millions of squares drifts by ~1e-4
    // relative, which moves the clipping coefficient (measured against grads.json's norm).
    // Rows of a matrix (a few hundred terms) are summed in float32, the row sums in float64.
    const squares = trained.map((k) => {
      const shape = m.params.get(k)!.shape;
      const rowSums = shape.length >= 2 ? o.node('ReduceSumSquare', [o.reshape(masked.get(k)!, o.ints([shape[0]!, -1]))], { axes: [1], keepdims: 0 })[0]! : o.mul(masked.get(k)!, masked.get(k)!);
      return o.reduceSum(o.cast(rowSums, 'float64'), [0], false);
    });
    const norm = o.cast(o.sqrt(squares.length === 1 ? squares[0]! : o.node('Sum', squares)[0]!), 'float32');
    o.output(norm, 'grad_norm', 'float32', []);
    if (spec.optimizer === 'grads') {
      for (const k of trained) o.output(masked.get(k)!, `grad.${k}`, 'float32', m.params.get(k)!.shape);
      return;
    }
    const opt = spec.optimizer;
    const lrDecay = o.input('lr_decay', 'float32', []);
    const stepSize = o.input('step_size', 'float32', []);
    const bc2Sqrt = o.input('bc2_sqrt', 'float32', []);
    // Scalars first, so that each full-size tensor is touched as few times as possible: the clip factor
    // c folds into (1−β₁)·c and (1−β₂)·c², and m/(√v/b + ε) = b·m/(√v + ε·b) with b = bc2_sqrt.
    let s1 = o.scalar(1 - opt.beta1);
    let s2 = o.scalar(1 - opt.beta2);
    if (opt.maxGradNorm !== undefined) {
      const clip = o.node('Min', [o.div(o.scalar(opt.maxGradNorm), o.add(norm, o.scalar(1e-6))), o.scalar(1)])[0]!;
      s1 = o.mul(s1, clip);
      s2 = o.mul(s2, o.mul(clip, clip));
    }
    const epsB = o.mul(o.scalar(opt.eps), bc2Sqrt);
    const stepB = o.mul(stepSize, bc2Sqrt);
    const b1 = o.scalar(opt.beta1);
    const b2 = o.scalar(opt.beta2);
    for (const k of trained) {
      const shape = m.params.get(k)!.shape;
      const mIn = o.input(`m.${k}`, 'float32', shape);
      const vIn = o.input(`v.${k}`, 'float32', shape);
      const gr = masked.get(k)!;
      // Outputs are written by their last node directly (an Identity would copy each tensor again).
      const [mNext] = o.node('Add', [o.mul(mIn, b1), o.mul(gr, s1)], {}, [`next.m.${k}`]);
      const [vNext] = o.node('Add', [o.mul(vIn, b2), o.mul(o.mul(gr, gr), s2)], {}, [`next.v.${k}`]);
      const update = o.mul(o.div(mNext!, o.add(o.sqrt(vNext!), epsB)), stepB);
      const decayedP = decayed.has(k) && opt.weightDecay !== 0 ? o.mul(k, lrDecay) : k;
      o.node('Sub', [decayedP, update], {}, [`next.${k}`]);
      for (const name of [`next.${k}`, `next.m.${k}`, `next.v.${k}`]) g.outputs.push({ name, type: 'float32', shape: [...shape] });
    }
  });
  foldConstants(g, facts);
  return { graph: g, trained, frozen, decayed };
}

/**
 * (weight / K) · Σ_k max(0, g_k² − t_k²), g = cf_matrix · lp, lp_r = log softmax(head(h[cf_rows_r]))[cf_targets_r]
 * (see TrainStepSpec.counterfactual). `flat` is the last hidden state as [B·S, H].
 */
function counterfactualPenalty(b: GraphBuilder, m: ModelForTraining, flat: string, cf: { weight: number; pairs: number; rows: number }): string {
  const rows = b.input('cf_rows', 'int64', [cf.rows]);
  const targets = b.input('cf_targets', 'int64', [cf.rows]);
  const M = b.input('cf_matrix', 'float32', [cf.pairs, cf.rows]);
  const t = b.input('cf_teacher_gap', 'float32', [cf.pairs]);
  const logits = m.family.head(b, m.config, m.task, b.gather(flat, rows));
  const [nll] = b.node('SoftmaxCrossEntropyLoss', [logits, targets], { reduction: 'none' }, 2); // −lp, [rows]
  const [col] = b.node('MatMul', [M, b.unsqueeze(b.neg(nll!), [1])]); // [pairs, 1]
  const gap = b.reshape(col!, b.ints([cf.pairs]));
  const excess = b.node('Relu', [b.sub(b.mul(gap, gap), b.mul(t, t))])[0]!;
  return b.mul(b.reduceSum(excess, [0], false), b.scalar(cf.weight / cf.pairs));
}

/**
 * Σ_k a_k · softplus(margin − g_k), g = pc_matrix · lp, lp_j = log softmax(head(h[pc_rows_j]))[pc_targets_j],
 * a = pc_pair_weight (see TrainStepSpec.contrast). softplus(x) = relu(x) + log(1 + exp(x − 2·relu(x))),
 * i.e. relu(x) + log(1 + e^(−|x|)): no overflow for any gap, and its derivative is σ(x) on both sides.
 */
function contrastLoss(b: GraphBuilder, m: ModelForTraining, flat: string, c: { margin: number; pairs: number; rows: number }): string {
  const rows = b.input('pc_rows', 'int64', [c.rows]);
  const targets = b.input('pc_targets', 'int64', [c.rows]);
  const M = b.input('pc_matrix', 'float32', [c.pairs, c.rows]);
  const a = b.input('pc_pair_weight', 'float32', [c.pairs]);
  const logits = m.family.head(b, m.config, m.task, b.gather(flat, rows));
  const [nll] = b.node('SoftmaxCrossEntropyLoss', [logits, targets], { reduction: 'none' }, 2); // −lp, [rows]
  const [col] = b.node('MatMul', [M, b.unsqueeze(b.neg(nll!), [1])]); // [pairs, 1]
  const gap = b.reshape(col!, b.ints([c.pairs]));
  const x = b.sub(b.scalar(c.margin), gap);
  const r = b.node('Relu', [x])[0]!;
  const softplus = b.add(r, b.log(b.add(b.scalar(1), b.exp(b.sub(x, b.mul(r, b.scalar(2)))))));
  return b.reduceSum(b.mul(softplus, a), [0], false);
}

/** Host-side AdamW scalars for update t (1-based) at learning rate lr, in float64 as torch computes them. */
export function adamScalars(opt: AdamWSettings, lr: number, t: number): { lr_decay: number; step_size: number; bc2_sqrt: number } {
  return {
    lr_decay: 1 - lr * opt.weightDecay,
    step_size: lr / (1 - Math.pow(opt.beta1, t)),
    bc2_sqrt: Math.sqrt(1 - Math.pow(opt.beta2, t)),
  };
}
