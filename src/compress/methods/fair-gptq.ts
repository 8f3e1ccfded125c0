/**
 * Fair-GPTQ (Proskurina, Metzler & Velcin 2025, "Fair-GPTQ: Bias-Aware Quantization for Large
 * Language Models", arXiv 2509.15206, §3; code upunaprosk/fair-gptq 3167b103 `gptq.py` on GPTQModel
 * v2.2.0). GPTQ whose layer-wise objective gains a term for pairs of sentences that differ only in
 * the group mentioned (X0, X1: the two sentences' inputs to a matrix, K pairs):
 *
 *   min_Ŵ ‖(W − Ŵ)X‖² + α‖Ŵ(X0 − X1)‖²-weighted, with
 *   H     = (1/K) Σ (X0 X0ᵀ + X1 X1ᵀ)            (GPTQ's Hessian on the pair sentences)
 *   H_x01 = (2α/K) Σ (X0 − X1)(X0 − X1)ᵀ
 *   Hd    = H + 0.01·mean(diag H)·I
 *   pre-update, sum_hessians 0:  W ← W − W·H_x01·Hd⁻¹                     (first order)
 *               sum_hessians 1:  W ← W − W·H_x01·(H2 + 0.01·mean diag H2·I)⁻¹, H2 = H + H_x01
 *                                (the minimiser of ‖(W'−W)X‖² + ‖W'Δ‖² as weighted above)
 *   then plain GPTQ (gptq.ts, the shared core) on the pre-updated W with U from Hd alone.
 *
 * Solvers (`solver`):
 *   pre-update (default)  the published method, above.
 *   joint                 GPTQ's column loop on the combined objective itself, so that rounding
 *                         respects the fairness term (Fair-GPTQ's error feedback comes from H alone
 *                         and can undo its pre-update). With Hd = H + λI (GPTQ's own dampening,
 *                         λ = dampening_frac·mean diag H) and H2 = Hd + H_x01,
 *                           (Q − W) Hd (Q − W)ᵀ + Q H_x01 Qᵀ = (Q − W*) H2 (Q − W*)ᵀ + const,
 *                           W* = W·Hd·H2⁻¹ = W − W·H_x01·H2⁻¹       (the exact minimiser, no overshoot)
 *                         so GPTQ runs on target W* with error feedback from H2 (U: H2⁻¹ = UᵀU).
 *                         α = 0 gives plain GPTQ exactly (H2 = Hd, W* = W). sum_hessians has
 *                         no effect here.
 *
 * α from a budget (`quality_budget` = b > 0): `alpha` becomes the upper end of a search for the
 * largest α whose model keeps held-out quality (the audit's quality proxy: perplexity for causal,
 * pseudo-perplexity for masked models, score/perplexity.ts, on the first `quality_lines` lines of the
 * held-out text) within ppl(α) / ppl(0) − 1 ≤ b, where α = 0 is plain GPTQ on the same pair
 * calibration at the same bits. Geometric bisection (util/bisect.ts, `budget_steps` halvings of
 * log α between alpha·10⁻³ and alpha) on the assumption that quality worsens with α; every trial
 * quantizes the step's matrices afresh from the same weights. The chosen α and the trace
 * (α, relative quality change) go into each matrix's report (`alpha`, `budget_trace`).
 *
 * The pair statistics come from the calibration walk (calibrate.ts) with paired batches: sequences
 * 2i, 2i+1 are [stereotype; anti-stereotype], padded to the same length; X0 − X1 is taken position by
 * position. Sequential or one-shot calibration as for GPTQ.
 *
 * Protocols:
 *   dike (default)  each sentence as the model reads text (causal: BOS + text; BERT: [CLS] … [SEP]),
 *                   pads dropped: H over real tokens, H_x01 over the positions real in both sentences;
 *   authors         their run exactly: no BOS, batches of one pair right-padded with the eos id, pads
 *                   kept in H and H_x01 (their activations enter like any token), the reference's
 *                   symmetric range (quantizer.ts Grid.referenceSymmetric).
 *
 * Where the term applies (the paper's configurations): `select_layers` all | lower | upper |
 * lower-upper | "i,j,…": with n = ⌈L/10⌉ rounded up to even, lower = the first n blocks, upper = the
 * last n, lower-upper = the first n/2 and the last n/2 (the paper's definitions; the snippets in the
 * authors' README for 'upper' and 'lower-upper' pass the lower layers' list, which we do not copy).
 * `ignore`: matrix kinds exempt from the term, matched as substrings of the module name as the
 * authors' `ignore_bias` is (e.g. "k_proj,q_proj,v_proj,fc1"), or their named lists `opt` and
 * `mistral`. Exempt matrices get plain GPTQ (α = 0), as in the reference. Lists take `,` or `+`
 * (`+` where a comma would end the option, as in `audit --variant fair-gptq:ignore=k_proj+q_proj`).
 */
import { DikeError } from '../../errors.js';
import { Gemm, choleskyInverseUpperBlocked } from '../gemm.js';
import { OptionReader } from '../options.js';
import { calibrationFromSequences, CALIBRATION_MODES, type CalibrationSet } from '../calibrate.js';
import type { CompressContext, InputStats, Method, MatrixReport } from '../types.js';
import type { LinearInfo } from '../../model/arch/types.js';
import { ModelRunner } from '../../runtime/session.js';
import { heldOutPerplexity } from '../../score/perplexity.js';
import { largestWithinBudget } from '../../util/bisect.js';
import { gptqTargets, readGptqOptions, type GptqOptions, type PreparedHessian, type PreUpdate } from './gptq.js';

export interface FairGptqOptions extends GptqOptions {
  alpha: number;
  sum_hessians: 0 | 1;
  /** stereoset, crows-pairs or a JSON file of pairs. */
  pairs: string;
  pairs_limit?: number;
  protocol: 'dike' | 'authors';
  select_layers: string;
  ignore: string;
  /** pre-update: the published method; joint: GPTQ on the combined objective (above). */
  solver: 'pre-update' | 'joint';
  /** Seed of seeded pair sources (shuffled:<source>, counterfactual). */
  pairs_seed: number;
  /** Group axes of counterfactual pairs ("gender+religion"). */
  axes?: string;
  /** Relative held-out quality budget vs α = 0 (plain GPTQ); 0 = off, α as given. */
  quality_budget: number;
  quality_lines: number;
  budget_steps: number;
}

/** The authors' README lists for `ignore_bias`. */
const IGNORE_PRESETS: Record<string, string> = {
  opt: 'k_proj,q_proj,v_proj,fc1',
  mistral: 'k_proj,q_proj,v_proj,up_proj,gate_proj',
};

/** Blocks where the fairness term applies, for a model with L blocks. */
export function selectedLayers(spec: string, L: number, where = ''): Set<number> {
  const all = Array.from({ length: L }, (_, i) => i);
  let n = Math.ceil((L * 10) / 100);
  if (n % 2 !== 0) n += 1;
  n = Math.min(n, L);
  switch (spec) {
    case 'all':
      return new Set(all);
    case 'lower':
      return new Set(all.slice(0, n));
    case 'upper':
      return new Set(all.slice(L - n));
    case 'lower-upper': {
      const h = Math.max(1, n / 2);
      return new Set([...all.slice(0, h), ...all.slice(L - h)]);
    }
  }
  const ids = spec.split(/[,+]/).map((s) => Number(s.trim()));
  if (ids.some((i) => !Number.isInteger(i) || i < 0)) throw new DikeError('recipe', `${where} "select_layers"`, `expected all, lower, upper, lower-upper or block indices "0,1,…", found "${spec}"`);
  for (const i of ids) if (i >= L) throw new DikeError('recipe', `${where} "select_layers"`, `block ${i} does not exist (the model has ${L})`);
  return new Set(ids);
}

function ignoredKinds(spec: string): string[] {
  const s = IGNORE_PRESETS[spec] ?? spec;
  return s.split(/[,+]/).map((x) => x.trim()).filter((x) => x !== '');
}

/** α for one matrix: 0 outside the selected blocks and for ignored kinds (the reference's rule). */
export function alphaFor(t: LinearInfo, opts: Pick<FairGptqOptions, 'alpha' | 'ignore'>, layers: Set<number>): number {
  const module = t.weight.replace(/\.weight$/, '');
  if (ignoredKinds(opts.ignore).some((k) => module.includes(k))) return 0;
  return layers.has(t.layer) ? opts.alpha : 0;
}

/** The pair sentences as a paired calibration set, tokenized under the chosen protocol. */
export function pairCalibration(
  ctx: Pick<CompressContext, 'model' | 'pairs'>,
  opts: Pick<FairGptqOptions, 'pairs' | 'pairs_limit' | 'protocol'> & Partial<Pick<FairGptqOptions, 'pairs_seed' | 'axes'>>,
  where: string,
): CalibrationSet {
  const pairs = ctx.pairs(
    {
      source: opts.pairs,
      ...(opts.pairs_limit !== undefined ? { limit: opts.pairs_limit } : {}),
      ...(opts.pairs_seed !== undefined ? { seed: opts.pairs_seed } : {}),
      ...(opts.axes !== undefined ? { axes: opts.axes.split(/[,+]/).map((a) => a.trim()).filter((a) => a !== '') } : {}),
    },
    where,
  );
  if (pairs.length === 0) throw new DikeError('recipe', `${where} "pairs"`, `no sentence pair in ${opts.pairs}`);
  const m = ctx.model;
  const tok = m.tokenizer;
  const causal = m.task === 'causal-lm';
  const eos = typeof m.rawConfig['eos_token_id'] === 'number' ? (m.rawConfig['eos_token_id'] as number) : tok.special.eos;
  const bos = typeof m.rawConfig['bos_token_id'] === 'number' ? (m.rawConfig['bos_token_id'] as number) : tok.special.bos ?? tok.special.eos;
  const ids = (text: string): number[] => {
    const body = tok.encode(text, { addSpecialTokens: false }).ids;
    if (opts.protocol === 'authors') return body;
    if (causal) return bos === undefined ? body : [bos, ...body];
    return [tok.special.cls ?? 101, ...body, tok.special.sep ?? 102];
  };
  // A pair with a sentence longer than the model's positions cannot be run: it is left out (both
  // sentences, so that the pairs stay aligned), and the calibration source says how many.
  const maxLen = m.shape.maxPositions;
  const encoded = pairs.map((p) => [ids(p.stereotype), ids(p.antiStereotype)] as const);
  const fits = encoded.filter(([a, b]) => a.length <= maxLen && b.length <= maxLen);
  if (fits.length === 0) throw new DikeError('recipe', `${where} "pairs"`, `every sentence pair in ${opts.pairs} is longer than the model's ${maxLen} positions`);
  const sequences = fits.flatMap(([a, b]) => [a, b]);
  const dropped = encoded.length - fits.length;
  const source = `${opts.pairs} pairs${opts.pairs_limit !== undefined ? ` (first ${opts.pairs_limit})` : ''}${opts.pairs_seed ? ` seed ${opts.pairs_seed}` : ''}${dropped > 0 ? ` (${dropped} of ${encoded.length} longer than the model's ${maxLen} positions left out)` : ''}`;
  if (opts.protocol === 'authors') {
    if (eos === undefined) throw new DikeError('recipe', `${where} "protocol"`, 'the authors pad with the eos id, and this model has none');
    return calibrationFromSequences(sequences, source, { rows: 2, keepPads: true, padId: eos, paired: true });
  }
  return calibrationFromSequences(sequences, source, { rows: 16, keepPads: false, padId: tok.special.pad ?? eos ?? 0, paired: true });
}

/** Σ_rows a G aᵀ for A [rows, cols] (‖A X‖² from the Gram G = X Xᵀ), on ORT's GEMM. */
async function quadratic(gemm: Gemm, A: Float64Array, G: Float64Array, rows: number, cols: number): Promise<number> {
  const AG = await gemm.product(A, G, rows, cols, cols);
  let s = 0;
  for (let i = 0; i < A.length; i++) s += A[i]! * AG[i]!;
  return s;
}

/**
 * The joint solver's target and Hessian for one [rows, cols] matrix (see the header): from the
 * input Gram G = Σ x xᵀ over `tokens` tokens and the pair Gram D = Σ ΔΔᵀ, in GPTQ's scale
 * H = 2G/tokens, H_x01 = (4α/tokens)·D; dead inputs (H_jj = 0) get H_jj := 1 before λ is taken,
 * as GPTQ does (their W columns are zeroed by gptqMatrix; D is zero there too).
 * Returns W* = W − W·H_x01·H2⁻¹ and the prepared H2 = H + λI + H_x01.
 */
export async function jointTarget(
  gemm: Gemm,
  W: ArrayLike<number>,
  rows: number,
  cols: number,
  gram: Float64Array,
  pairGram: Float64Array,
  tokens: number,
  alpha: number,
  damp: number,
): Promise<{ W: Float64Array; h: PreparedHessian }> {
  const n = cols;
  const g = 2 / tokens;
  const f = (4 * alpha) / tokens;
  const H2 = new Float64Array(n * n);
  for (let i = 0; i < H2.length; i++) H2[i] = g * gram[i]!;
  const dead = new Uint8Array(n);
  let trace = 0;
  for (let j = 0; j < n; j++) {
    if (H2[j * n + j] === 0) {
      dead[j] = 1;
      H2[j * n + j] = 1;
    }
    trace += H2[j * n + j]!;
  }
  const lambda = n === 0 ? 0 : (damp * trace) / n;
  for (let j = 0; j < n; j++) H2[j * n + j]! += lambda;
  const Wd = Float64Array.from(W);
  if (alpha === 0) {
    const { U } = await choleskyInverseUpperBlocked(gemm, H2, n, 0);
    return { W: Wd, h: { n, tokens, perm: null, dead, U, lambda } };
  }
  const Hx = new Float64Array(n * n);
  for (let i = 0; i < Hx.length; i++) {
    Hx[i] = f * pairGram[i]!;
    H2[i]! += Hx[i]!;
  }
  const { U } = await choleskyInverseUpperBlocked(gemm, H2, n, 0);
  // W* = W − ((W·H_x01)·Uᵀ)·U.
  const WH = await gemm.product(Wd, Hx, rows, n, n);
  const WHU = await gemm.product(WH, U, rows, n, n, { transB: true });
  const dW = await gemm.product(WHU, U, rows, n, n);
  for (let i = 0; i < Wd.length; i++) Wd[i]! -= dW[i]!;
  return { W: Wd, h: { n, tokens, perm: null, dead, U, lambda } };
}

/** Fair-GPTQ's joint solver as a PreUpdate: the exact minimiser as target, H2 for the feedback. */
export function jointPreUpdate(gemm: Gemm, opts: FairGptqOptions, alphaOf: (t: LinearInfo) => number): PreUpdate {
  return async (W: Float32Array, t: LinearInfo, s: InputStats) => {
    const alpha = alphaOf(t);
    const D = s.pairGram;
    if (D === undefined || s.pairs === undefined) throw new DikeError(t.weight, 'fair-gptq', 'no pair statistics for this matrix');
    const detail: Record<string, number | string | boolean> = {
      alpha,
      solver: 'joint',
      pairs: s.pairs,
      bias_WdX_sq: await quadratic(gemm, Float64Array.from(W), D, t.outDim, t.inDim),
    };
    const j = await jointTarget(gemm, W, t.outDim, t.inDim, s.gram, D, s.tokens, alpha, opts.dampening_frac);
    let dn = 0;
    let wn = 0;
    const out = new Float32Array(W.length);
    for (let i = 0; i < W.length; i++) {
      out[i] = j.W[i]!;
      dn += (j.W[i]! - W[i]!) ** 2;
      wn += W[i]! * W[i]!;
    }
    detail['delta_w_rel'] = wn > 0 ? Math.sqrt(dn / wn) : 0;
    return { W: out, detail, h: j.h };
  };
}

/**
 * The pre-update of one matrix. In Dikē's scale H' = 2G/n (gptq.ts prepareHessian, n tokens) =
 * c·H with c = 2K/n, so H_x01 in the same scale is c·(2α/K)·D = (4α/n)·D, D = Σ ΔΔᵀ; the update
 * W·H_x01·Hd⁻¹ is invariant to that common scale (the dampening is relative).
 */
export function fairPreUpdate(gemm: Gemm, opts: FairGptqOptions, alphaOf: (t: LinearInfo) => number): PreUpdate {
  return async (W: Float32Array, t: LinearInfo, s: InputStats, h: PreparedHessian) => {
    const alpha = alphaOf(t);
    const rows = t.outDim;
    const n = t.inDim;
    const D = s.pairGram;
    if (D === undefined || s.pairs === undefined) throw new DikeError(t.weight, 'fair-gptq', 'no pair statistics for this matrix');
    const Wd = Float64Array.from(W);
    const detail: Record<string, number | string | boolean> = {
      alpha,
      sum_hessians: opts.sum_hessians,
      solver: 'pre-update',
      pairs: s.pairs,
      bias_WdX_sq: await quadratic(gemm, Wd, D, rows, n),
    };
    if (alpha === 0) return { W, detail };
    const f = (4 * alpha) / s.tokens;
    const Hx = new Float64Array(n * n);
    for (let i = 0; i < Hx.length; i++) Hx[i] = f * D[i]!;
    let U: Float64Array;
    if (opts.sum_hessians === 0) U = h.U; // Hd⁻¹ = UᵀU (no act_order: original column order)
    else {
      // H2 = H + H_x01 before H's dead-input fix, dampened with its own mean diagonal.
      const H2 = new Float64Array(n * n);
      const g = 2 / s.tokens;
      for (let i = 0; i < H2.length; i++) H2[i] = g * s.gram[i]! + Hx[i]!;
      U = (await choleskyInverseUpperBlocked(gemm, H2, n, opts.dampening_frac)).U;
    }
    // ΔW = W·H_x01·UᵀU = ((W·H_x01)·Uᵀ)·U.
    const WH = await gemm.product(Wd, Hx, rows, n, n);
    const WHU = await gemm.product(WH, U, rows, n, n, { transB: true });
    const dW = await gemm.product(WHU, U, rows, n, n);
    const out = new Float32Array(rows * n);
    let dn = 0;
    let wn = 0;
    for (let i = 0; i < out.length; i++) {
      out[i] = Wd[i]! - dW[i]!;
      dn += dW[i]! * dW[i]!;
      wn += Wd[i]! * Wd[i]!;
    }
    detail['delta_w_rel'] = Math.sqrt(dn / wn);
    return { W: out, detail };
  };
}

export const fairGptq: Method<FairGptqOptions> = {
  name: 'fair-gptq',
  description: 'Fair-GPTQ: GPTQ with a term that removes what the weights do with the difference between paired stereotype / anti-stereotype sentences',
  reference: 'Proskurina, Metzler & Velcin 2025, "Fair-GPTQ: Bias-Aware Quantization for Large Language Models" (arXiv 2509.15206), §3: H_x01 = (2α/K) Σ (X0 − X1)(X0 − X1)ᵀ, W ← W − W·H_x01·H⁻¹, then GPTQ',
  // Calibrated on its own sentence pairs (ctx.pairs), not on the recipe's calibration text.
  needsCalibration: false,
  parseOptions(raw, where) {
    const r = new OptionReader(raw, 'recipe', where);
    const base = readGptqOptions(r, where);
    const o: FairGptqOptions = {
      ...base,
      alpha: r.num('alpha', 0.1, [0, 1e6]),
      sum_hessians: r.int('sum_hessians', 1, [0, 1]) as 0 | 1,
      pairs: r.str('pairs', 'stereoset'),
      ...(raw['pairs_limit'] !== undefined ? { pairs_limit: r.int('pairs_limit', undefined, [1, 1 << 30]) } : {}),
      protocol: r.oneOf('protocol', ['dike', 'authors'] as const, 'dike'),
      select_layers: r.str('select_layers', 'all'),
      ignore: r.str('ignore', 'none'),
      solver: r.oneOf('solver', ['pre-update', 'joint'] as const, 'pre-update'),
      pairs_seed: r.int('pairs_seed', 0, [0, 2 ** 32 - 1]),
      // axes: "gender+race" (or with commas in a recipe), or a YAML/JSON list; kept as "a+b".
      ...(raw['axes'] !== undefined ? { axes: r.list('axes')!.join('+') } : {}),
      quality_budget: r.num('quality_budget', 0, [0, 10]),
      quality_lines: r.int('quality_lines', 20, [1, 1 << 20]),
      budget_steps: r.int('budget_steps', 5, [0, 30]),
    };
    if (o.ignore === 'none') o.ignore = '';
    r.done();
    if (o.act_order || o.static_groups) throw new DikeError('recipe', `${where} "act_order"`, 'fair-gptq runs without act_order and static_groups (as the paper)');
    // The authors' protocol includes the reference's symmetric range unless asked otherwise.
    if (o.protocol === 'authors' && raw['symmetric_range'] === undefined) o.symmetric_range = 'reference';
    if (!['all', 'lower', 'upper', 'lower-upper'].includes(o.select_layers) && !/^\s*\d+(\s*[,+]\s*\d+)*\s*$/.test(o.select_layers)) {
      throw new DikeError('recipe', `${where} "select_layers"`, `expected all, lower, upper, lower-upper or block indices "0,1,…", found "${o.select_layers}"`);
    }
    return o;
  },
  async apply(ctx, opts) {
    if (opts.quality_budget === 0) return quantizeWithPairs(ctx, opts);
    if (ctx.heldOut === undefined) throw new DikeError('recipe', 'fair-gptq "quality_budget"', 'needs held-out quality text, and none was given');
    const lines = ctx.heldOut(opts.quality_lines, 'fair-gptq "quality_budget"');
    // Every trial starts from the same weights: keep them, and put them back after each.
    const saved = new Map(ctx.targets.map((t) => [t.weight, ctx.params.get(t.weight)!.data.slice()]));
    const restore = (): void => {
      for (const [w, d] of saved) ctx.params.get(w)!.data.set(d);
    };
    const quality = async (alpha: number): Promise<number> => {
      await quantizeWithPairs(ctx, { ...opts, alpha });
      const runner = await ModelRunner.create(ctx.model, ctx.threads !== undefined ? { threads: ctx.threads } : {});
      try {
        return (await heldOutPerplexity(ctx.model, runner, lines)).value;
      } finally {
        await runner.dispose();
        restore();
      }
    };
    const base = await quality(0);
    const { x: alpha, trace } = await largestWithinBudget(async (a) => (await quality(a)) / base - 1, opts.quality_budget, opts.alpha, { steps: opts.budget_steps });
    const reports = await quantizeWithPairs(ctx, { ...opts, alpha });
    const record = JSON.stringify([{ alpha: 0, quality: base }, ...trace.map((t) => ({ alpha: t.x, relative_change: t.value, within: t.within }))]);
    for (const r of reports) {
      r.detail!['quality_budget'] = opts.quality_budget;
      r.detail!['alpha_chosen'] = alpha;
      r.detail!['budget_trace'] = record;
    }
    return reports;
  },
};

/** Fair-GPTQ at the options' α over the step's targets, in place in ctx.params. */
async function quantizeWithPairs(ctx: CompressContext, opts: FairGptqOptions): Promise<MatrixReport[]> {
  const set = pairCalibration(ctx, opts, 'fair-gptq');
  const layers = selectedLayers(opts.select_layers, ctx.shape.numLayers, 'fair-gptq');
  const gemm = new Gemm();
  const reports: MatrixReport[] = [];
  const alphaOf = (t: LinearInfo): number => alphaFor(t, opts, layers);
  try {
    await ctx.walk({ mode: opts.calibration, granularity: 'group', pairs: true, set }, async (targets, stats) => {
      const rep = await gptqTargets(gemm, ctx, targets, stats, opts, 'fair-gptq', (opts.solver === 'joint' ? jointPreUpdate : fairPreUpdate)(gemm, opts, alphaOf));
      // ‖Q(X0 − X1)‖² after quantization, beside the dense ‖W(X0 − X1)‖² the pre-update recorded.
      for (const r of rep) {
        const t = targets.find((x) => x.weight === r.weight)!;
        const s = stats.get(t.weight)!;
        const p = ctx.params.get(t.weight)!;
        const Q = new Float64Array(t.outDim * t.inDim);
        if (t.layout === 'out-in') Q.set(p.data);
        else for (let i = 0; i < t.inDim; i++) for (let o = 0; o < t.outDim; o++) Q[o * t.inDim + i] = p.data[i * t.outDim + o]!;
        r.detail!['bias_QdX_sq'] = await quadratic(gemm, Q, s.pairGram!, t.outDim, t.inDim);
        r.detail!['protocol'] = opts.protocol;
        r.detail!['pair_tokens_sha256'] = set.hash;
      }
      reports.push(...rep);
    });
  } finally {
    await gemm.dispose();
  }
  return reports;
}
