/**
 * Fairness saliency of every weight, for Critical Weight Protection (Al Hakim et al. 2026, arXiv
 * 2601.12033; compress/methods/cwp.ts): the squared gradient of a per-pair fairness loss, averaged
 * over pairs (a diagonal empirical Fisher of the fairness loss):
 *
 *   s(w) = (1/N) Σ_i (∂ℓ_i/∂w)²,   ℓ_i = |score(stereotype_i) − score(anti-stereotype_i)|
 *
 * The authors' code squares each pair's gradient before summing (per item, then averaged), not the
 * gradient of the summed loss. |·| changes only the sign of ∂ℓ_i, so (∂ℓ_i/∂w)² = (∂d_i/∂w)² with
 * d_i the benchmark's own item objective (CrowS-Pairs' score(sent_more) − score(sent_less),
 * measure/crows-pairs.ts pairObjectives, nangia-pll for masked LMs, sum-ll for causal ones). Their
 * score is the per-token mean NLL; Dikē's is the benchmark's unnormalised sum (documented deviation).
 * Their optional "− β · Fisher of the general LM loss" term is not implemented (β = 0).
 *
 * Pairs come from a pair source (measure/pairs.ts; default StereoSet intrasentence) so that the
 * benchmark that is scored afterwards (CrowS-Pairs) is not the one the saliency was fitted on.
 */
import { writeSafetensors, type RawTensor } from '../model/safetensors.js';
import type { ItemObjective, ScoreTerm } from '../measure/types.js';
import { crowsPairs, pairObjectives, type CrowsPair } from '../measure/crows-pairs.js';
import { sentencePairs, type SentencePairRecord } from '../measure/pairs.js';
import { loadCheckpoint, type Checkpoint } from '../model/checkpoint.js';
import { DikeError } from '../errors.js';
import { TrainSession } from '../train/session.js';
import { packScoreTerms } from './gradient.js';
import type { ModelForTraining } from '../train/step.js';

const MAX_BATCH = 32;
const LENGTH_STEP = 16;

/** Sentence pairs as CrowS-style items (the stereotype is sent_more, direction "stereo"). */
export function pairItems(ckpt: Checkpoint, pairs: readonly SentencePairRecord[], scorer: string): ItemObjective[] {
  const rows: CrowsPair[] = pairs.map((p, i) => ({ index: i, sentMore: p.stereotype, sentLess: p.antiStereotype, direction: 'stereo', biasType: p.group ?? '', line: 0 }));
  return pairObjectives(ckpt, rows, scorer);
}

export interface Saliency {
  /** (1/N) Σ_i (∂d_i/∂w)² by parameter name, in the parameter's storage layout. */
  scores: Map<string, Float64Array>;
  items: number;
}

/** Per-item squared gradients of the item objectives, averaged over items (float64). */
export async function squaredGradientSaliency(
  model: ModelForTraining,
  items: readonly ItemObjective[],
  wrt: readonly string[],
  opts: { threads?: number; padId: number; onProgress?: (done: number, total: number) => void },
): Promise<Saliency> {
  const maxLen = model.shape.maxPositions;
  const lengthOf = (t: ScoreTerm): number => {
    const S = Math.min(maxLen, Math.ceil(t.ids.length / LENGTH_STEP) * LENGTH_STEP);
    if (t.ids.length > S) throw new RangeError(`a scored sequence of ${t.ids.length} tokens exceeds the model's ${maxLen} positions`);
    return S;
  };
  // One step graph per padded length, shaped for the largest single item at that length.
  const shapes = new Map<number, { batch: number; maxRows: number }>();
  for (const it of items) {
    const count = new Map<number, number>();
    for (const t of it.terms) {
      const S = lengthOf(t);
      count.set(S, (count.get(S) ?? 0) + 1);
      const sh = shapes.get(S) ?? { batch: 1, maxRows: 1 };
      sh.maxRows = Math.max(sh.maxRows, t.rows.length);
      shapes.set(S, sh);
    }
    for (const [S, n] of count) shapes.get(S)!.batch = Math.min(MAX_BATCH, Math.max(shapes.get(S)!.batch, n));
  }
  const wanted = new Set(wrt);
  const sessions = new Map<number, TrainSession>();
  const scores = new Map(wrt.map((k) => [k, new Float64Array(model.params.get(k)!.data.length)]));
  const g = new Map(wrt.map((k) => [k, new Float64Array(model.params.get(k)!.data.length)]));
  try {
    for (let n = 0; n < items.length; n++) {
      for (const acc of g.values()) acc.fill(0);
      const byLength = new Map<number, ScoreTerm[]>();
      for (const t of items[n]!.terms) {
        const S = lengthOf(t);
        byLength.set(S, [...(byLength.get(S) ?? []), t]);
      }
      for (const [S, list] of byLength) {
        const { batch, maxRows } = shapes.get(S)!;
        const R = batch * maxRows;
        let session = sessions.get(S);
        if (session === undefined) {
          session = await TrainSession.create(model, { batch, seq: S, rows: R, optimizer: 'grads', trainable: (k) => wanted.has(k) }, opts.threads);
          sessions.set(S, session);
        }
        for (let start = 0; start < list.length; start += batch) {
          const chunk = list.slice(start, start + batch);
          const x = packScoreTerms(chunk, batch, S, R, opts.padId);
          const out = await session.gradients(x);
          for (const [k, gk] of out.grads) {
            const acc = g.get(k)!;
            for (let i = 0; i < gk.length; i++) acc[i]! += gk[i]!;
          }
        }
      }
      for (const [k, acc] of g) {
        const s = scores.get(k)!;
        for (let i = 0; i < acc.length; i++) s[i]! += acc[i]! * acc[i]!;
      }
      opts.onProgress?.(n + 1, items.length);
    }
  } finally {
    for (const s of sessions.values()) await s.release();
  }
  if (items.length > 0) for (const s of scores.values()) for (let i = 0; i < s.length; i++) s[i]! /= items.length;
  return { scores, items: items.length };
}

/** Write saliency scores as F32 tensors named and shaped like the parameters they score. */
export function writeSaliency(file: string, sal: Saliency, shapes: ReadonlyMap<string, readonly number[]>, meta: Record<string, string>): void {
  const tensors: [string, RawTensor][] = [...sal.scores.keys()].sort().map((k) => {
    const f = Float32Array.from(sal.scores.get(k)!);
    return [k, { dtype: 'F32', shape: [...shapes.get(k)!], bytes: new Uint8Array(f.buffer) }];
  });
  writeSafetensors(file, tensors, { format: 'pt', kind: 'dike-saliency', items: String(sal.items), ...meta });
}


export interface SaliencyRequest {
  /** Model directory. */
  model: string;
  dataDir: string | undefined;
  /** Pair source (measure/pairs.ts): stereoset (default), crows-pairs, a JSON file, or a control. */
  pairs: string;
  limit?: number;
  scorer?: string;
  seed: number;
  threads?: number;
  out: string;
  onProgress?: (done: number, total: number) => void;
}

/** Compute the saliency of every linear weight of the model on the pairs and write it to `out`. */
export async function saveFairnessSaliency(req: SaliencyRequest): Promise<{ items: number; scorer: string; weights: number }> {
  const ckpt = loadCheckpoint(req.model);
  const scorer = req.scorer ?? crowsPairs.defaultScorer(ckpt.task);
  const choices = ckpt.task === 'causal-lm' ? ['sum-ll'] : ckpt.task === 'masked-lm' ? ['nangia-pll', 'diff-mean'] : [];
  if (scorer === undefined || !choices.includes(scorer)) throw new DikeError('', '--scorer', `no pair scorer ${JSON.stringify(scorer)} for a ${ckpt.task} model (choices: ${choices.join(', ') || 'none'})`);
  const pairs = sentencePairs(req.dataDir, { source: req.pairs, seed: req.seed, ...(req.limit !== undefined ? { limit: req.limit } : {}) });
  if (pairs.length === 0) throw new DikeError('', '--pairs', `${req.pairs}: no sentence pairs`);
  const items = pairItems(ckpt, pairs, scorer);
  const wrt = ckpt.family.linears(ckpt.config, ckpt.task).map((l) => l.weight);
  const sal = await squaredGradientSaliency(ckpt, items, wrt, {
    padId: ckpt.tokenizer.special.pad ?? 0,
    ...(req.threads !== undefined ? { threads: req.threads } : {}),
    ...(req.onProgress ? { onProgress: req.onProgress } : {}),
  });
  writeSaliency(req.out, sal, new Map(wrt.map((k) => [k, ckpt.params.get(k)!.shape])), { pairs: req.pairs, scorer, seed: String(req.seed), loss: 'mean over pairs of (d|score(stereotype) - score(anti-stereotype)|/dw)^2' });
  return { items: sal.items, scorer, weights: wrt.length };
}
