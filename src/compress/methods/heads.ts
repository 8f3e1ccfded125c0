/**
 * Structured attention-head pruning. A pruned head is ZEROED, shapes kept: its rows of the query,
 * key and value projections (weights and biases) and its columns of the output projection. Removing
 * those rows and columns physically would change the config (Hugging Face records that as
 * `pruned_heads` and re-slices the matrices on load); zeroing is output-equivalent, since a head
 * whose W_o columns are zero adds exactly nothing to the residual stream, and keeps every
 * compressed model loadable by every tool unchanged.
 *
 * Head h of a layer owns dimensions [h·d, (h+1)·d) (d = head dim) of the query projection and of
 * the output projection's input; GPT-2's fused c_attn holds q, k, v as its output blocks
 * [0, H), [H, 2H), [2H, 3H), so head h owns rows h·d…, H + h·d…, 2H + h·d… of it. Llama's grouped-
 * query attention shares each key/value head among heads/kv_heads query heads: only QUERY heads are
 * pruned (q rows, o columns); a key/value head is zeroed too once every query head of its group is.
 *
 * Importance (lowest pruned first; ties by layer, then head index):
 *   norm      ‖[W_q^h; W_k^h; W_v^h; (W_o^h)ᵀ]‖_F: the Frobenius norm of the head's q, k and v rows
 *             and o columns together (weights only, no biases; for GQA the k/v rows are those of the
 *             key/value head the query head reads).
 *   ablation  Michel, Levy & Neubig 2019 ("Are Sixteen Heads Really Better than One?", §3: masking a
 *             single head, ξ_h = 0 in eq. 1): the increase of the mean calibration loss when the head
 *             alone is masked, L(ξ_h = 0) − L(ξ = 1). Their §4 prunes by a first-order estimate of
 *             exactly this difference (eq. 2); here it is measured. One-shot: all heads are scored on
 *             the dense model, then pruned together. The loss is computed in this file:
 *               causal LM  mean NLL of every calibration token after the first (BOS), i.e.
 *                          −mean log P(tᵢ | t₍<i₎);
 *               masked LM  BERT-style: in each sequence 15% of the non-special positions (at least
 *                          one; chosen with the step's seed, the same positions for every head) are
 *                          all replaced by [MASK] at once, and the loss is the mean NLL of the
 *                          original tokens at those positions (no 80/10/10 replacement).
 *
 * Amount: `fraction` of the heads (rounded) or `count` heads, per layer, or over all selected
 * layers together with `global: true`. A layer is selected when its attention output projection is
 * in the step's scope.
 */
import { DikeError } from '../../errors.js';
import type { LinearInfo } from '../../model/arch/types.js';
import type { Checkpoint, Param } from '../../model/checkpoint.js';
import { Rng } from '../../util/rng.js';
import { ModelRunner, gatherRows, lengthBuckets, padBatch, type ModelLike } from '../../runtime/session.js';
import { causalTokenLogprobs, DEFAULT_MAX_TOKENS, type CausalJob } from '../../score/causal.js';
import { causalBos, maskAndPadIds } from '../../score/text.js';
import { OptionReader } from '../options.js';
import { type CompressContext, type Method, type MatrixReport, type OutIn, fromOutIn, toOutIn, zeroFraction } from '../types.js';

export interface HeadsOptions {
  /** Fraction of the heads to prune (exactly one of fraction and count is set). */
  fraction?: number;
  count?: number;
  importance: 'norm' | 'ablation';
  global: boolean;
}

/** A block of rows (output channels) or columns (input dimensions) of a linear map, [out, in] view. */
export interface Slice {
  linear: LinearInfo;
  axis: 'rows' | 'cols';
  start: number;
  length: number;
}

export interface AttentionLayer {
  layer: number;
  q?: LinearInfo;
  k?: LinearInfo;
  v?: LinearInfo;
  qkv?: LinearInfo;
  o: LinearInfo;
}

type Shape = CompressContext['shape'];

export function attentionLayers(all: readonly LinearInfo[], layers: readonly number[]): AttentionLayer[] {
  return layers.map((layer) => {
    const role = (r: string): LinearInfo | undefined => all.find((l) => l.layer === layer && l.module === 'attention' && l.role === r);
    const o = role('o');
    const q = role('q');
    const qkv = role('qkv');
    if (o === undefined || (q === undefined && qkv === undefined)) throw new DikeError('recipe', `heads layer ${layer}`, 'the architecture lists no query/output projections for this layer');
    return { layer, o, ...(q ? { q } : {}), ...(role('k') ? { k: role('k')! } : {}), ...(role('v') ? { v: role('v')! } : {}), ...(qkv ? { qkv } : {}) };
  });
}

/**
 * The slices of query head h: `score` (what the norm importance reads) and `zero` (what pruning
 * zeroes when the head goes alone; shared key/value heads of GQA are handled by the caller).
 */
export function headSlices(att: AttentionLayer, shape: Shape, h: number): { score: Slice[]; zero: Slice[]; kv: Slice[] } {
  const d = shape.headDim;
  const qDim = shape.numHeads * d;
  const o: Slice = { linear: att.o, axis: 'cols', start: h * d, length: d };
  if (att.qkv) {
    // GPT-2 fused projection: [q | k | v] blocks of width numHeads·d (GPT-2 has no GQA).
    const rows = [0, 1, 2].map((b): Slice => ({ linear: att.qkv!, axis: 'rows', start: b * qDim + h * d, length: d }));
    return { score: [...rows, o], zero: [...rows, o], kv: [] };
  }
  const q: Slice = { linear: att.q!, axis: 'rows', start: h * d, length: d };
  const kvHead = Math.floor(h / (shape.numHeads / shape.numKvHeads));
  const kv = [att.k, att.v].filter((l): l is LinearInfo => l !== undefined).map((l): Slice => ({ linear: l, axis: 'rows', start: kvHead * d, length: d }));
  const mha = shape.numKvHeads === shape.numHeads;
  return { score: [q, ...kv, o], zero: mha ? [q, ...kv, o] : [q, o], kv: mha ? [] : kv };
}

/** Σ w² over a slice of an [out, in] matrix. */
function sumSquares(m: OutIn, s: Slice): number {
  let acc = 0;
  if (s.axis === 'rows') {
    for (let i = s.start * m.cols; i < (s.start + s.length) * m.cols; i++) acc += m.data[i]! * m.data[i]!;
  } else {
    for (let r = 0; r < m.rows; r++) for (let c = s.start; c < s.start + s.length; c++) acc += m.data[r * m.cols + c]! * m.data[r * m.cols + c]!;
  }
  return acc;
}

/** Zero a slice of an [out, in] matrix, and the matching bias entries for row slices. */
function zeroSlice(m: OutIn, s: Slice, bias: Param | undefined): void {
  if (s.axis === 'rows') {
    m.data.fill(0, s.start * m.cols, (s.start + s.length) * m.cols);
    bias?.data.fill(0, s.start, s.start + s.length);
  } else {
    for (let r = 0; r < m.rows; r++) m.data.fill(0, r * m.cols + s.start, r * m.cols + s.start + s.length);
  }
}

// ---- calibration loss (ablation importance) ------------------------------------------------------

export type LossPlan =
  | { kind: 'causal'; pad: number; jobs: CausalJob[] }
  | { kind: 'masked'; pad: number; rows: number[][]; positions: number[][]; targets: number[][] };

/** The fixed inputs of the calibration loss: the same tokens (and masked positions) for every head. */
export function lossPlan(model: Checkpoint, seqs: readonly number[][], seed: number): LossPlan {
  if (model.task === 'causal-lm') {
    const jobs = seqs.filter((s) => s.length >= 2).map((s) => ({ context: s.slice(0, 1), ids: s.slice(1) }));
    return { kind: 'causal', pad: causalBos(model), jobs };
  }
  if (model.task === 'masked-lm') {
    const { mask, pad } = maskAndPadIds(model);
    const rng = new Rng(seed);
    const plan: LossPlan = { kind: 'masked', pad, rows: [], positions: [], targets: [] };
    for (const s of seqs) {
      const candidates = s.map((_, p) => p).filter((p) => !model.tokenizer.specialIds.has(s[p]!));
      if (candidates.length === 0) continue;
      const k = Math.max(1, Math.round(0.15 * candidates.length));
      const chosen = rng.shuffle(candidates).slice(0, k).sort((a, b) => a - b);
      const row = s.slice();
      for (const p of chosen) row[p] = mask;
      plan.rows.push(row);
      plan.positions.push(chosen);
      plan.targets.push(chosen.map((p) => s[p]!));
    }
    return plan;
  }
  throw new DikeError(model.configFile, '"architectures"', `heads: ablation importance needs a language model, and ${model.hfClass} is a classifier (use importance: norm)`);
}

/** Mean negative log-likelihood of the plan's target tokens under the given parameters (float64 sum). */
export async function meanNll(model: ModelLike, plan: LossPlan, threads: number | undefined): Promise<number> {
  const runner = await ModelRunner.create(model, threads !== undefined ? { threads } : {});
  try {
    let sum = 0;
    let n = 0;
    if (plan.kind === 'causal') {
      for (const lp of await causalTokenLogprobs(runner, plan.pad, plan.jobs)) {
        for (let i = 0; i < lp.length; i++) sum -= lp[i]!;
        n += lp.length;
      }
    } else {
      const H = runner.hiddenSize;
      for (const group of lengthBuckets(plan.rows.map((r) => r.length), plan.rows.map(() => 1), DEFAULT_MAX_TOKENS)) {
        const batch = padBatch(group.map((i) => plan.rows[i]!), plan.pad);
        const [last] = await runner.hidden(batch, [runner.numLayers]);
        const at = group.flatMap((i, r) => plan.positions[i]!.map((p) => [r, p] as const));
        const lp = await runner.logprobs(gatherRows(last!, batch.seq, H, at), group.flatMap((i) => plan.targets[i]!));
        for (let i = 0; i < lp.length; i++) sum -= lp[i]!;
        n += lp.length;
      }
    }
    if (n === 0) throw new DikeError('recipe', 'heads', 'the calibration set has no token to score');
    return sum / n;
  } finally {
    await runner.dispose();
  }
}

/** A copy of `params` in which query head h of `att` is masked (its W_o columns zeroed). */
export function maskedParams(params: Map<string, Param>, att: AttentionLayer, d: number, h: number): Map<string, Param> {
  const p = params.get(att.o.weight)!;
  const m = toOutIn(p, att.o);
  zeroSlice(m, { linear: att.o, axis: 'cols', start: h * d, length: d }, undefined);
  const copy: Param = { ...p, data: new Float32Array(p.data.length) };
  fromOutIn(m, copy, att.o);
  return new Map(params).set(att.o.weight, copy);
}

/**
 * Zero the chosen query heads (pruned[i] for layers[i]) and, for GQA, the key/value heads whose whole
 * group is pruned; one report per touched matrix, with the per-head scores of its layer.
 */
export function zeroHeads(ctx: CompressContext, layers: readonly AttentionLayer[], pruned: number[][], scores: number[][], detail: Record<string, number | string | boolean>, method: string): MatrixReport[] {
  const { shape } = ctx;
  const H = shape.numHeads;
  const reports: MatrixReport[] = [];
  const groupSize = H / shape.numKvHeads;
  layers.forEach((att, i) => {
    const heads = pruned[i]!.sort((a, b) => a - b);
    if (heads.length === 0) return;
    const slices = heads.flatMap((h) => headSlices(att, shape, h).zero);
    // GQA: a key/value head whose whole group of query heads is pruned is dead; zero it too.
    for (let g = 0; g < shape.numKvHeads && groupSize > 1; g++) {
      if (Array.from({ length: groupSize }, (_, j) => g * groupSize + j).every((h) => heads.includes(h))) slices.push(...headSlices(att, shape, g * groupSize).kv);
    }
    const touched = [...new Set(slices.map((s) => s.linear))];
    for (const l of touched) {
      const p = ctx.params.get(l.weight)!;
      const m = toOutIn(p, l);
      const bias = l.bias !== undefined ? ctx.params.get(l.bias) : undefined;
      for (const s of slices) if (s.linear === l) zeroSlice(m, s, bias);
      fromOutIn(m, p, l);
      ctx.quantized.delete(l.weight);
      const perHead = Object.fromEntries(scores[i]!.map((v, h) => [`score_h${h}`, v]));
      reports.push({ weight: l.weight, method, sparsity: zeroFraction(p.data), detail: { ...detail, pruned_heads: heads.join(','), ...perHead } });
    }
  });
  return reports;
}

// ---- the method ----------------------------------------------------------------------------------

export const heads: Method<HeadsOptions> = {
  name: 'heads',
  description: 'structured attention-head pruning (zeroing) by weight norm or calibration-loss ablation',
  reference: 'Michel, Levy & Neubig 2019, "Are Sixteen Heads Really Better than One?" (§3 single-head ablation, eq. 1 head mask)',
  needsCalibration: false, // only importance: ablation reads the calibration text (ctx.calibrationSet)
  parseOptions(raw, where) {
    const r = new OptionReader(raw, 'recipe', where);
    const hasFraction = raw['fraction'] !== undefined;
    if (hasFraction === (raw['count'] !== undefined)) throw new DikeError('recipe', `${where} "fraction"`, 'give exactly one of fraction or count');
    const amount = hasFraction ? { fraction: r.num('fraction', undefined, [0, 1]) } : { count: r.int('count', undefined, [0, Number.MAX_SAFE_INTEGER]) };
    const o: HeadsOptions = { ...amount, importance: r.oneOf('importance', ['norm', 'ablation'] as const, 'norm'), global: r.bool('global', false) };
    r.done();
    return o;
  },
  async apply(ctx, opts) {
    const { shape } = ctx;
    const H = shape.numHeads;
    const layerIds = [...new Set(ctx.targets.filter((t) => t.module === 'attention' && t.role === 'o').map((t) => t.layer))].sort((a, b) => a - b);
    if (layerIds.length === 0) throw new DikeError('recipe', 'heads', 'the scope selects no attention output projection (a layer is selected through its o matrix)');
    const layers = attentionLayers(ctx.allLinears, layerIds);

    // Importance of every (layer, head).
    const scores: number[][] = [];
    const detail: Record<string, number | string | boolean> = { importance: opts.importance };
    if (opts.importance === 'norm') {
      for (const att of layers) {
        const mats = new Map<string, OutIn>();
        const mat = (l: LinearInfo): OutIn => mats.get(l.weight) ?? mats.set(l.weight, toOutIn(ctx.params.get(l.weight)!, l)).get(l.weight)!;
        scores.push(Array.from({ length: H }, (_, h) => Math.sqrt(headSlices(att, shape, h).score.reduce((s, sl) => s + sumSquares(mat(sl.linear), sl), 0))));
      }
    } else {
      const plan = lossPlan(ctx.model, ctx.calibrationSet().sequences, ctx.seed);
      const base = await meanNll(ctx.model, plan, ctx.threads);
      detail['base_loss'] = base;
      for (const att of layers) {
        const row: number[] = [];
        for (let h = 0; h < H; h++) row.push((await meanNll({ ...ctx.model, params: maskedParams(ctx.params, att, shape.headDim, h) }, plan, ctx.threads)) - base);
        scores.push(row);
      }
    }

    // Choose the heads to prune: lowest importance first, ties by layer then head.
    const amountOf = (total: number): number => {
      const k = opts.fraction !== undefined ? Math.round(opts.fraction * total) : opts.count!;
      if (k > total) throw new DikeError('recipe', 'heads "count"', `${k} heads requested but only ${total} ${opts.global ? 'in the selected layers' : 'per layer'}`);
      return k;
    };
    const pruned: number[][] = layers.map(() => []);
    const byImportance = (a: [number, number], b: [number, number]): number => scores[a[0]]![a[1]]! - scores[b[0]]![b[1]]! || a[0] - b[0] || a[1] - b[1];
    if (opts.global) {
      const all = layers.flatMap((_, i) => Array.from({ length: H }, (_, h): [number, number] => [i, h]));
      for (const [i, h] of all.sort(byImportance).slice(0, amountOf(all.length))) pruned[i]!.push(h);
    } else {
      const k = amountOf(H);
      layers.forEach((_, i) => {
        for (const [, h] of Array.from({ length: H }, (_, h): [number, number] => [i, h]).sort(byImportance).slice(0, k)) pruned[i]!.push(h);
      });
    }

    return zeroHeads(ctx, layers, pruned, scores, detail, 'heads');
  },
};
