/**
 * The gradient of a benchmark's own bias objective with respect to the weights, through Dikē's
 * autodiff (train/step.ts with optimizer 'grads'):
 *
 *   J(W) = Σ_items score_i(W),   score_i = Σ_terms weight · Σ_rows log P(target | ids; W)
 *
 * (CrowS-Pairs: score_i = score(sent_more) − score(sent_less), unrounded.) The step graph's loss is
 * −Σ_r w_r log P(t_r), so each row gets w_r = −weight and the loss equals J. Gradients are summed over
 * batches in float64.
 *
 * Sequences are grouped by padded length (multiples of LENGTH_STEP), one step graph per length; a
 * batch of length S holds about BATCH_TOKENS / S sequences, so every batch costs about the same and
 * padding stays under LENGTH_STEP − 1 tokens a sequence (short batches are filled with one-token rows
 * of weight 0). Only the weights in `wrt` get gradients (the others are constants of the graph).
 */
import type { ItemObjective, ScoreTerm } from '../measure/types.js';
import { TrainSession, type StepBatch } from '../train/session.js';
import type { ModelForTraining } from '../train/step.js';

const BATCH_TOKENS = 1024;
const LENGTH_STEP = 4;
const MAX_BATCH = 128;

/** Sequences per batch for padded length S. */
export function batchFor(S: number): number {
  return Math.max(1, Math.min(MAX_BATCH, Math.floor(BATCH_TOKENS / S)));
}

export interface ObjectiveGradient {
  /** dJ/dW by parameter name, float64 sums over batches. */
  grads: Map<string, Float64Array>;
  /** J(W) as the graph computed it (float32 per batch, summed in float64). */
  objective: number;
  items: number;
}

/** dJ/dW for the parameters in `wrt` (J = Σ over `items` of their score). */
export async function objectiveGradient(
  model: ModelForTraining,
  items: readonly ItemObjective[],
  wrt: readonly string[],
  opts: { threads?: number; padId: number; onProgress?: (done: number, total: number) => void },
): Promise<ObjectiveGradient> {
  const terms: ScoreTerm[] = items.flatMap((i) => i.terms);
  const maxLen = model.shape.maxPositions;
  const byLength = new Map<number, ScoreTerm[]>();
  for (const t of terms) {
    const S = Math.min(maxLen, Math.ceil(t.ids.length / LENGTH_STEP) * LENGTH_STEP);
    if (t.ids.length > S) throw new RangeError(`a scored sequence of ${t.ids.length} tokens exceeds the model's ${maxLen} positions`);
    const list = byLength.get(S) ?? [];
    list.push(t);
    byLength.set(S, list);
  }
  const wanted = new Set(wrt);
  const grads = new Map(wrt.map((k) => [k, new Float64Array(model.params.get(k)!.data.length)]));
  let objective = 0;
  let done = 0;
  const total = terms.length;
  for (const [S, list] of [...byLength].sort(([a], [b]) => a - b)) {
    const BATCH = batchFor(S);
    const maxRows = Math.max(...list.map((t) => t.rows.length));
    const R = BATCH * maxRows;
    const session = await TrainSession.create(model, { batch: BATCH, seq: S, rows: R, optimizer: 'grads', trainable: (k) => wanted.has(k) }, opts.threads);
    try {
      for (let start = 0; start < list.length; start += BATCH) {
        const chunk = list.slice(start, start + BATCH);
        const x = packScoreTerms(chunk, BATCH, S, R, opts.padId);
        const out = await session.gradients(x);
        objective += out.loss;
        for (const [k, g] of out.grads) {
          const acc = grads.get(k)!;
          for (let i = 0; i < g.length; i++) acc[i]! += g[i]!;
        }
        done += chunk.length;
        opts.onProgress?.(done, total);
      }
    } finally {
      await session.release();
    }
  }
  for (const k of wrt) if (!grads.has(k)) throw new Error(`no gradient for ${k}`);
  return { grads, objective, items: items.length };
}

/**
 * One step batch of score terms, [batch × S] right-padded with `padId`: each term's rows are scored
 * with weight −w, so the step's loss (−Σ w log P) is the objective. Slots past the terms are filler
 * rows attending to one token (no all-masked softmax) with no scored row.
 */
export function packScoreTerms(chunk: readonly ScoreTerm[], batch: number, S: number, R: number, padId: number): StepBatch {
  const x: StepBatch = {
    batch,
    seq: S,
    inputIds: new BigInt64Array(batch * S).fill(BigInt(padId)),
    attentionMask: new BigInt64Array(batch * S),
    rows: new BigInt64Array(R),
    targets: new BigInt64Array(R),
    weights: new Float32Array(R),
  };
  let r = 0;
  for (let b = 0; b < batch; b++) {
    const t = chunk[b];
    if (t === undefined) {
      x.attentionMask[b * S] = 1n;
      continue;
    }
    t.ids.forEach((id, j) => {
      x.inputIds[b * S + j] = BigInt(id);
      x.attentionMask[b * S + j] = 1n;
    });
    t.rows.forEach((row, k) => {
      x.rows[r] = BigInt(b * S + row);
      x.targets[r] = BigInt(t.targets[k]!);
      x.weights[r] = -t.weight;
      r++;
    });
  }
  return x;
}

/** Σ g ⊙ (after − before) over the named parameters: the first-order change of J. */
export function firstOrderChange(grads: ReadonlyMap<string, Float64Array>, before: ReadonlyMap<string, { data: Float32Array }>, after: ReadonlyMap<string, { data: Float32Array }>, names: readonly string[]): number {
  let s = 0;
  for (const k of names) {
    const g = grads.get(k);
    if (g === undefined) throw new Error(`no gradient for ${k}`);
    const a = after.get(k)!.data;
    const b = before.get(k)!.data;
    for (let i = 0; i < g.length; i++) if (a[i] !== b[i]) s += g[i]! * (a[i]! - b[i]!);
  }
  return s;
}

/** Σ g ⊙ (after − before) over the given entries of each parameter (head units). */
export function firstOrderChangeAt(grads: ReadonlyMap<string, Float64Array>, before: ReadonlyMap<string, { data: Float32Array }>, after: ReadonlyMap<string, { data: Float32Array }>, entries: ReadonlyMap<string, Int32Array>): number {
  let s = 0;
  for (const [k, idx] of entries) {
    const g = grads.get(k);
    if (g === undefined) throw new Error(`no gradient for ${k}`);
    const a = after.get(k)!.data;
    const b = before.get(k)!.data;
    for (const i of idx) if (a[i] !== b[i]) s += g[i]! * (a[i]! - b[i]!);
  }
  return s;
}
