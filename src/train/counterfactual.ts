/**
 * Sentence pairs in the training batch, for the counterfactual gap penalty (step.ts,
 * TrainStepSpec.counterfactual; issue 16 fair distillation and post-compression repair). Causal LMs:
 * each sentence is BOS + its tokens (truncated to the batch's sequence length), position k scores
 * token k + 1, and g_k = Σ log P(stereotype_k) − Σ log P(anti_k). Each step appends `perStep` pairs
 * as extra batch rows after the text rows, chosen by step number (pairs (t−1)·P … in order, cycled),
 * so a resumed run sees the same pairs; the text rows and their loss are unchanged.
 *
 * Group re-weighting (imbalanced learning): with `groupWeighting: inverse`, pair k of group g(k)
 * weighs w_k = N / (G · n_g(k)) (N pairs, G groups, n_g pairs of group g; mean weight 1), so every
 * group contributes alike however few pairs it has: the penalty becomes (β/P) Σ_k w_k max(0, g_k² − t_k²).
 * No graph change: row k of cf_matrix and t_k are scaled by √w_k (w·max(0, g² − t²) = max(0, (√w g)² − (√w t)²)).
 */
import type { ModelRunner } from '../runtime/session.js';
import { causalTokenLogprobs } from '../score/causal.js';
import type { StepBatch } from './session.js';

export interface CounterfactualSettings {
  /** Where the pairs came from (stereoset, crows-pairs or a file), for the record. */
  source: string;
  limit?: number;
  /** Pairs per step (P): the batch grows by 2P rows. */
  perStep: number;
  /** β of (β/P) Σ max(0, g² − t²). */
  weight: number;
  /** `inverse`: weight each pair by N / (G · n_group) (pairs without a group form one group). */
  groupWeighting?: 'none' | 'inverse';
}

export interface TextPair {
  stereotype: string;
  antiStereotype: string;
  group?: string;
}

export interface PairTokens {
  s: number[];
  a: number[];
  /** √w of the pair (1 without group re-weighting). */
  scale: number;
}

/** w_k = N / (G · n_g(k)) for each pair (see the header). */
export function inverseGroupWeights(groups: readonly (string | undefined)[]): number[] {
  const count = new Map<string, number>();
  for (const g of groups) count.set(g ?? '', (count.get(g ?? '') ?? 0) + 1);
  return groups.map((g) => groups.length / (count.size * count.get(g ?? '')!));
}

export function tokenizePairs(pairs: readonly TextPair[], encode: (text: string) => number[], bos: number, seq: number, weighting: 'none' | 'inverse' = 'none'): PairTokens[] {
  const ids = (t: string): number[] => [bos, ...encode(t)].slice(0, seq);
  const w = weighting === 'inverse' ? inverseGroupWeights(pairs.map((p) => p.group)) : pairs.map(() => 1);
  return pairs.map((p, k) => ({ s: ids(p.stereotype), a: ids(p.antiStereotype), scale: Math.sqrt(w[k]!) }));
}

/** Loss rows the penalty needs for P pairs at sequence length S (every position but the last of each row). */
export function counterfactualRows(perStep: number, seq: number): number {
  return 2 * perStep * (seq - 1);
}

/** The pairs of step t (1-based). */
export function pairsOfStep(pairs: readonly PairTokens[], perStep: number, t: number): PairTokens[] {
  return Array.from({ length: perStep }, (_, j) => pairs[((t - 1) * perStep + j) % pairs.length]!);
}

/** The batch with the pairs appended as rows B … B + 2P − 1 (right-padded, pads masked) and the penalty's inputs. */
export function withPairRows(batch: StepBatch, chosen: readonly PairTokens[], padId: number): StepBatch {
  const { batch: B, seq: S } = batch;
  const P = chosen.length;
  const rowsOut = 2 * P;
  const inputIds = new BigInt64Array((B + rowsOut) * S).fill(BigInt(padId));
  const attentionMask = new BigInt64Array((B + rowsOut) * S);
  inputIds.set(batch.inputIds);
  attentionMask.set(batch.attentionMask);
  const Rc = counterfactualRows(P, S);
  const cfRows = new BigInt64Array(Rc);
  const cfTargets = new BigInt64Array(Rc);
  const cfMatrix = new Float32Array(P * Rc);
  let r = 0;
  chosen.forEach((pair, k) => {
    [pair.s, pair.a].forEach((ids, side) => {
      const row = B + 2 * k + side;
      ids.forEach((id, p) => {
        inputIds[row * S + p] = BigInt(id);
        attentionMask[row * S + p] = 1n;
      });
      for (let p = 0; p + 1 < ids.length; p++) {
        cfRows[r] = BigInt(row * S + p);
        cfTargets[r] = BigInt(ids[p + 1]!);
        cfMatrix[k * Rc + r] = side === 0 ? pair.scale : -pair.scale;
        r++;
      }
    });
  });
  // Unused rows point at position 0 with target 0 and a zero column: they add nothing.
  return { ...batch, batch: B + rowsOut, inputIds, attentionMask, cfRows, cfTargets, cfMatrix, cfTeacherGap: new Float32Array(P) };
}

/** The teacher's gaps on the chosen pairs, by ordinary inference (float64 sums), times √w of each pair. */
export async function teacherGaps(teacher: ModelRunner, bos: number, chosen: readonly PairTokens[]): Promise<Float32Array> {
  const lps = await causalTokenLogprobs(teacher, bos, chosen.flatMap((p) => [{ ids: p.s.slice(1) }, { ids: p.a.slice(1) }]));
  const sum = (x: Float32Array): number => x.reduce((a, v) => a + v, 0);
  return Float32Array.from(chosen, (p, k) => p.scale * (sum(lps[2 * k]!) - sum(lps[2 * k + 1]!)));
}
