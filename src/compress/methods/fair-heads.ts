/**
 * Bias-aware attention-head pruning: two methods that score every head by masking it alone (its W_o
 * columns zeroed, as heads.ts's ablation: Michel, Levy & Neubig 2019, §3) and reading two numbers:
 *
 *   importance  I_h = L(ξ_h = 0) − L(ξ = 1): the increase of the mean calibration loss (heads.ts)
 *   bias        B(θ) = |mean_k (log P(s_k) − log P(a_k))| over K sentence pairs (stereotype s_k,
 *               anti-stereotype a_k; causal LM: Σ log P(t_i | BOS, t_<i), masked LM: the
 *               pseudo-log-likelihood, every non-special token masked alone), so B = 0 when the
 *               model prefers neither side on average;
 *               contribution C_h = B(θ) − B(θ with head h masked): the bias the head adds.
 *
 * fair-heads   prune the heads of lowest  S_h = I_h − λ·C_h  (λ in nats of loss per nat of
 *              sentence log-prob gap; λ = 0: heads.ts with importance: ablation, exactly), per layer
 *              or over all selected layers (`global`).
 * fasp         FASP (Zayed, Mordido, Shabanian, Baldini & Chandar 2024, "Fairness-Aware Structured
 *              Pruning in Transformers", AAAI; arXiv 2312.15398): the round(γ·N) heads most important
 *              for performance (largest I_h, the paper's perplexity of the model without the head,
 *              ranked the same) are excluded from pruning; of the others, the heads contributing most
 *              to bias (largest C_h) are pruned first, over the whole model. As published except the
 *              bias measure: the paper scores bias from generations (toxicity / sentiment gaps across
 *              groups); here it is the pair log-prob gap above, so that no classifier is needed.
 *
 * Heads are scored one at a time on the model as the step begins (one-shot), and pruned by zeroing
 * (heads.ts zeroHeads). Pairs come from ctx.pairs (the audit's and CLI's pair source), so the bias
 * measured here should be disjoint from the benchmark the audit scores (issue 14 §3).
 */
import { DikeError } from '../../errors.js';
import type { Checkpoint } from '../../model/checkpoint.js';
import { ModelRunner, type ModelLike } from '../../runtime/session.js';
import { causalTokenLogprobs } from '../../score/causal.js';
import { maskedTokenLogprobs, nonSpecialPositions } from '../../score/masked.js';
import { causalBos, maskAndPadIds } from '../../score/text.js';
import { OptionReader } from '../options.js';
import type { CompressContext, Method, MatrixReport, SentencePair } from '../types.js';
import { attentionLayers, lossPlan, maskedParams, meanNll, zeroHeads, type AttentionLayer } from './heads.js';

interface Amount {
  fraction?: number;
  count?: number;
}

export interface FairHeadsOptions extends Amount {
  lambda: number;
  global: boolean;
  pairs: string;
  pairs_limit: number;
}

export interface FaspOptions extends Amount {
  gamma: number;
  pairs: string;
  pairs_limit: number;
}

/** (layer index, head) pairs sorted by `key` ascending, ties by layer then head. */
function ranked(table: number[][], key: (i: number, h: number) => number): [number, number][] {
  const all = table.flatMap((row, i) => row.map((_, h): [number, number] => [i, h]));
  return all.sort((a, b) => key(a[0], a[1]) - key(b[0], b[1]) || a[0] - b[0] || a[1] - b[1]);
}

function amountOf(a: Amount, total: number, where: string): number {
  const k = a.fraction !== undefined ? Math.round(a.fraction * total) : a.count!;
  if (k > total) throw new DikeError('recipe', `${where} "count"`, `${k} heads requested but only ${total} can be pruned`);
  return k;
}

/** fair-heads: per layer (or globally) the heads of lowest I_h − λ·C_h. */
export function selectFairHeads(importance: number[][], contribution: number[][], lambda: number, amount: Amount, global: boolean): number[][] {
  const score = (i: number, h: number): number => importance[i]![h]! - lambda * contribution[i]![h]!;
  const pruned: number[][] = importance.map(() => []);
  if (global) {
    const order = ranked(importance, score);
    for (const [i, h] of order.slice(0, amountOf(amount, order.length, 'fair-heads'))) pruned[i]!.push(h);
  } else {
    importance.forEach((row, i) => {
      const order = row.map((_, h) => h).sort((a, b) => score(i, a) - score(i, b) || a - b);
      pruned[i]!.push(...order.slice(0, amountOf(amount, row.length, 'fair-heads')));
    });
  }
  return pruned;
}

/** FASP: exclude the round(γ·N) most important heads, then prune the largest contributions to bias. */
export function selectFasp(importance: number[][], contribution: number[][], gamma: number, amount: Amount): { pruned: number[][]; critical: [number, number][] } {
  const N = importance.reduce((s, r) => s + r.length, 0);
  const nCritical = Math.round(gamma * N);
  const critical = ranked(importance, (i, h) => -importance[i]![h]!).slice(0, nCritical);
  const isCritical = new Set(critical.map(([i, h]) => `${i}/${h}`));
  const candidates = ranked(contribution, (i, h) => -contribution[i]![h]!).filter(([i, h]) => !isCritical.has(`${i}/${h}`));
  const k = amountOf(amount, N, 'fasp');
  if (k > candidates.length) throw new DikeError('recipe', 'fasp "gamma"', `${k} heads requested but only ${candidates.length} remain after excluding the ${nCritical} most important (γ = ${gamma})`);
  const pruned: number[][] = importance.map(() => []);
  for (const [i, h] of candidates.slice(0, k)) pruned[i]!.push(h);
  return { pruned, critical };
}

// ---- measuring -----------------------------------------------------------------------------------

type BiasPlan =
  | { kind: 'causal'; bos: number; s: number[][]; a: number[][] }
  | { kind: 'masked'; mask: number; pad: number; s: number[][]; a: number[][]; special: ReadonlySet<number> };

function biasPlan(model: Checkpoint, pairs: readonly SentencePair[]): BiasPlan {
  const tok = model.tokenizer;
  if (model.task === 'causal-lm') {
    const enc = (t: string): number[] => tok.encode(t, { addSpecialTokens: false }).ids;
    return { kind: 'causal', bos: causalBos(model), s: pairs.map((p) => enc(p.stereotype)), a: pairs.map((p) => enc(p.antiStereotype)) };
  }
  if (model.task === 'masked-lm') {
    const { mask, pad } = maskAndPadIds(model);
    const enc = (t: string): number[] => tok.encode(t).ids;
    return { kind: 'masked', mask, pad, s: pairs.map((p) => enc(p.stereotype)), a: pairs.map((p) => enc(p.antiStereotype)), special: tok.specialIds };
  }
  throw new DikeError(model.configFile, '"architectures"', `bias-aware head pruning needs a language model, and ${model.hfClass} is a classifier`);
}

/** Signed mean over pairs of log P(stereotype) − log P(anti-stereotype) (float64 sums). */
export async function meanPairGap(model: ModelLike, plan: BiasPlan, threads: number | undefined): Promise<number> {
  const runner = await ModelRunner.create(model, threads !== undefined ? { threads } : {});
  try {
    const seqs = [...plan.s, ...plan.a];
    const lps =
      plan.kind === 'causal'
        ? await causalTokenLogprobs(runner, plan.bos, seqs.map((ids) => ({ ids })))
        : await maskedTokenLogprobs(runner, plan.mask, plan.pad, seqs.map((ids) => ({ ids, positions: nonSpecialPositions(ids, plan.special) })));
    const total = lps.map((lp) => lp.reduce((s, v) => s + v, 0));
    const K = plan.s.length;
    let gap = 0;
    for (let k = 0; k < K; k++) gap += total[k]! - total[K + k]!;
    return gap / K;
  } finally {
    await runner.dispose();
  }
}

interface HeadTables {
  layers: AttentionLayer[];
  importance: number[][];
  contribution: number[][];
  detail: Record<string, number | string | boolean>;
}

/** I_h and C_h for every query head of the layers whose o projection is in the step's scope. */
async function measureHeads(ctx: CompressContext, pairsSpec: { pairs: string; pairs_limit: number }, where: string): Promise<HeadTables> {
  const layerIds = [...new Set(ctx.targets.filter((t) => t.module === 'attention' && t.role === 'o').map((t) => t.layer))].sort((a, b) => a - b);
  if (layerIds.length === 0) throw new DikeError('recipe', where, 'the scope selects no attention output projection (a layer is selected through its o matrix)');
  const layers = attentionLayers(ctx.allLinears, layerIds);
  const pairs = ctx.pairs({ source: pairsSpec.pairs, limit: pairsSpec.pairs_limit }, where);
  if (pairs.length === 0) throw new DikeError('recipe', `${where} "pairs"`, `no sentence pair in ${pairsSpec.pairs}`);
  const bplan = biasPlan(ctx.model, pairs);
  const lplan = lossPlan(ctx.model, ctx.calibrationSet().sequences, ctx.seed);
  const baseLoss = await meanNll(ctx.model, lplan, ctx.threads);
  const baseGap = await meanPairGap(ctx.model, bplan, ctx.threads);
  const importance: number[][] = [];
  const contribution: number[][] = [];
  for (const att of layers) {
    const I: number[] = [];
    const C: number[] = [];
    for (let h = 0; h < ctx.shape.numHeads; h++) {
      const masked = { ...ctx.model, params: maskedParams(ctx.params, att, ctx.shape.headDim, h) };
      I.push((await meanNll(masked, lplan, ctx.threads)) - baseLoss);
      C.push(Math.abs(baseGap) - Math.abs(await meanPairGap(masked, bplan, ctx.threads)));
    }
    importance.push(I);
    contribution.push(C);
  }
  return { layers, importance, contribution, detail: { base_loss: baseLoss, base_pair_gap: baseGap, pairs: pairs.length } };
}

/** Per-head numbers of each report's layer, for the record. */
function annotate(ctx: CompressContext, reports: MatrixReport[], t: HeadTables): MatrixReport[] {
  for (const r of reports) {
    const layer = ctx.allLinears.find((l) => l.weight === r.weight)!.layer;
    const i = t.layers.findIndex((a) => a.layer === layer);
    t.importance[i]!.forEach((v, h) => (r.detail![`importance_h${h}`] = v));
    t.contribution[i]!.forEach((v, h) => (r.detail![`bias_contribution_h${h}`] = v));
  }
  return reports;
}

function readAmount(r: OptionReader, raw: Record<string, unknown>, where: string): Amount {
  if ((raw['fraction'] !== undefined) === (raw['count'] !== undefined)) throw new DikeError('recipe', `${where} "fraction"`, 'give exactly one of fraction or count');
  return raw['fraction'] !== undefined ? { fraction: r.num('fraction', undefined, [0, 1]) } : { count: r.int('count', undefined, [0, Number.MAX_SAFE_INTEGER]) };
}

function readPairs(r: OptionReader): { pairs: string; pairs_limit: number } {
  return { pairs: r.str('pairs', 'stereoset'), pairs_limit: r.int('pairs_limit', 64, [1, 1 << 30]) };
}

export const fairHeads: Method<FairHeadsOptions> = {
  name: 'fair-heads',
  description: 'attention-head pruning by ablation importance minus λ × the head\'s contribution to the stereotype/anti-stereotype log-prob gap',
  reference: 'Michel, Levy & Neubig 2019 (§3 single-head ablation) with a bias term: prune the lowest I_h − λ·C_h, C_h = |gap| − |gap without head h|',
  needsCalibration: true, // the importance is the calibration loss
  parseOptions(raw, where) {
    const r = new OptionReader(raw, 'recipe', where);
    const o: FairHeadsOptions = { ...readAmount(r, raw, where), lambda: r.num('lambda', 1, [0, 1e6]), global: r.bool('global', false), ...readPairs(r) };
    r.done();
    return o;
  },
  async apply(ctx, opts) {
    const t = await measureHeads(ctx, opts, 'fair-heads');
    const pruned = selectFairHeads(t.importance, t.contribution, opts.lambda, opts, opts.global);
    const scores = t.importance.map((row, i) => row.map((v, h) => v - opts.lambda * t.contribution[i]![h]!));
    return annotate(ctx, zeroHeads(ctx, t.layers, pruned, scores, { ...t.detail, lambda: opts.lambda }, 'fair-heads'), t);
  },
};

export const fasp: Method<FaspOptions> = {
  name: 'fasp',
  description: 'FASP: keep the γ share of heads most important for the loss, prune the heads contributing most to bias among the rest',
  reference: 'Zayed, Mordido, Shabanian, Baldini & Chandar 2024, "Fairness-Aware Structured Pruning in Transformers" (AAAI 2024, arXiv 2312.15398), bias measured as the sentence-pair log-prob gap',
  needsCalibration: true,
  parseOptions(raw, where) {
    const r = new OptionReader(raw, 'recipe', where);
    const o: FaspOptions = { ...readAmount(r, raw, where), gamma: r.num('gamma', 0.5, [0, 1]), ...readPairs(r) };
    r.done();
    return o;
  },
  async apply(ctx, opts) {
    const t = await measureHeads(ctx, opts, 'fasp');
    const { pruned, critical } = selectFasp(t.importance, t.contribution, opts.gamma, opts);
    const detail = { ...t.detail, gamma: opts.gamma, critical_heads: critical.map(([i, h]) => `${t.layers[i]!.layer}.${h}`).join(',') };
    return annotate(ctx, zeroHeads(ctx, t.layers, pruned, t.contribution, detail, 'fasp'), t);
  },
};
