/**
 * Pseudo-log-likelihood contrast (masked LMs; issue 14 §3: a masked-model testbed). CrowS-Pairs'
 * nangia-pll score (Nangia et al. 2020, metric.py) compares, for each pair, the pseudo-log-likelihood
 * of the tokens the two sentences SHARE (difflib-aligned, each masked alone), given the words that
 * differ. Plain MLM on one side's sentences raises those shared tokens in both contexts alike; this loss
 * targets the difference itself. With the pair's unrounded item score
 *
 *   g_k = Σ_{i ∈ shared} log P(more_i | more∖i) − Σ_{i ∈ shared} log P(less_i | less∖i)
 *
 * the stage minimises  L = (1/P) Σ_k softplus(m − s·g_k)  over the P pairs of the step, s = +1 toward
 * the more stereotypical sentence, −1 toward the less. The margin m bounds the push: dL/dg_k =
 * −s·σ(m − s·g_k)/P, which vanishes once s·g_k ≫ m (a logistic, Bradley–Terry-style pair loss).
 *
 * Every masked copy is one sequence of the step's batch with one scored row; a pair's copies are never
 * split across steps. Pairs are packed greedily, in a seeded order per epoch, into steps of at most
 * `batch` copies, so the pairs of step t depend only on (seed, t) and a resumed run sees the same ones.
 * The pairs' copies come from measure/crows-pairs.ts pairObjectives (the benchmark's own alignment);
 * this module sees only their token ids and signs.
 */
import { Rng } from '../util/rng.js';
import type { StepBatch } from './session.js';

/** One masked copy: ids with one position masked, the scored row(s), their original token(s), ±1. */
export interface ContrastCopy {
  ids: number[];
  rows: number[];
  targets: number[];
  /** +1 on the more stereotypical sentence's copies, −1 on the less stereotypical one's. */
  weight: number;
}

/** A pair as its masked copies (structurally a measure ItemObjective): g = Σ weight · log P. */
export interface ContrastPair {
  id: string;
  terms: ContrastCopy[];
}

export interface ContrastSettings {
  /** m of softplus(m − s·g). */
  margin: number;
  /** s: +1 favours the more stereotypical sentence, −1 the less. */
  sign: 1 | -1;
  /** Where the pairs came from, for the record. */
  source: string;
}

/** The step graph's size for the contrast: `copies` sequences (one scored row each), up to `pairs` pairs. */
export interface ContrastShape {
  margin: number;
  pairs: number;
  rows: number;
}

/** The pairs a stage can use: one scored row per copy, at least one copy, every copy within `seq` tokens. */
export function usablePairs(pairs: readonly ContrastPair[], seq: number, batch: number): { kept: ContrastPair[]; dropped: number } {
  const kept = pairs.filter((p) => p.terms.length > 0 && p.terms.length <= batch && p.terms.every((t) => t.ids.length <= seq && t.rows.length === 1));
  return { kept, dropped: pairs.length - kept.length };
}

/**
 * The pairs of each step (indices into `pairs`), `steps` steps: each epoch a seeded permutation, packed
 * greedily into steps of at most `batch` copies (a pair that does not fit starts the next step).
 */
export function contrastSchedule(pairs: readonly ContrastPair[], batch: number, steps: number, seed: number): number[][] {
  if (pairs.length === 0) throw new Error('no contrast pair');
  const out: number[][] = [];
  const rng = new Rng(seed);
  while (out.length < steps) {
    const order = pairs.map((_, i) => i);
    for (let i = order.length - 1; i > 0; i--) {
      const j = rng.nextU32() % (i + 1);
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    let cur: number[] = [];
    let used = 0;
    for (const k of order) {
      const n = pairs[k]!.terms.length;
      if (used + n > batch) {
        out.push(cur);
        cur = [];
        used = 0;
      }
      cur.push(k);
      used += n;
    }
    if (cur.length > 0) out.push(cur);
  }
  return out.slice(0, steps);
}

/**
 * The step batch of the chosen pairs: copy j of the step is sequence j ([batch, seq], right-padded with
 * `padId`); pc_rows/pc_targets its scored position and token; pc_matrix[k, j] = s·weight of copy j if it
 * belongs to pair k; pc_pair_weight[k] = 1/P for the P chosen pairs (0 for unused slots). Unused
 * sequences attend to their first token only and carry a zero column. No cross-entropy rows.
 */
export function contrastBatch(pairs: readonly ContrastPair[], chosen: readonly number[], shape: ContrastShape, seq: number, sign: 1 | -1, padId: number): StepBatch {
  const B = shape.rows;
  const S = seq;
  const inputIds = new BigInt64Array(B * S).fill(BigInt(padId));
  const attentionMask = new BigInt64Array(B * S);
  const pcRows = new BigInt64Array(B);
  const pcTargets = new BigInt64Array(B);
  const pcMatrix = new Float32Array(shape.pairs * B);
  const pcPairWeight = new Float32Array(shape.pairs);
  if (chosen.length > shape.pairs) throw new Error(`${chosen.length} pairs exceed the step's ${shape.pairs}`);
  let j = 0;
  chosen.forEach((k, slot) => {
    pcPairWeight[slot] = 1 / chosen.length;
    for (const t of pairs[k]!.terms) {
      if (j >= B) throw new Error(`the pairs of the step need more than ${B} sequences`);
      t.ids.forEach((id, p) => {
        inputIds[j * S + p] = BigInt(id);
        attentionMask[j * S + p] = 1n;
      });
      pcRows[j] = BigInt(j * S + t.rows[0]!);
      pcTargets[j] = BigInt(t.targets[0]!);
      pcMatrix[slot * B + j] = sign * t.weight;
      j++;
    }
  });
  for (; j < B; j++) attentionMask[j * S] = 1n;
  return {
    batch: B, seq: S, inputIds, attentionMask,
    rows: new BigInt64Array(0), targets: new BigInt64Array(0), weights: new Float32Array(0),
    pcRows, pcTargets, pcMatrix, pcPairWeight,
  };
}
