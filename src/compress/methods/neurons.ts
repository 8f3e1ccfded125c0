/**
 * Structured FFN-neuron pruning. Intermediate neuron i of a feed-forward block is row i of the up
 * projection (and of the gate projection in gated FFNs such as Llama's SwiGLU) and column i of the
 * down projection; pruning it zeroes that row (with its bias entry) and that column, shapes kept.
 * Its output contribution d_i·act(u_iᵀx + b_i) is then exactly zero (the down bias is shared by all
 * neurons and is kept).
 *
 * Importance, from the weights alone (biases excluded); u_i is the neuron's incoming weights, the
 * up row and, for gated FFNs, the gate row together as one vector; d_i is the down column:
 *   product  ‖u_i‖₂ · ‖d_i‖₂ (default) — a weight-only proxy for the neuron's gain: its output
 *            d_i·act(u_iᵀx) scales with ‖d_i‖, and its pre-activation is bounded by |u_iᵀx| ≤ ‖u_i‖‖x‖;
 *   norm     ‖u_i‖₂ — the norm of the incoming weights alone, as Li et al. 2017 ("Pruning Filters
 *            for Efficient ConvNets", §3.1) rank filters (L2 here rather than their L1).
 * In every selected layer the round(fraction · intermediate) neurons of lowest importance are
 * pruned (ties by index). A layer is selected when its down projection is in the step's scope.
 */
import { DikeError } from '../../errors.js';
import type { LinearInfo } from '../../model/arch/types.js';
import { OptionReader } from '../options.js';
import { type Method, type MatrixReport, type OutIn, fromOutIn, toOutIn, zeroFraction } from '../types.js';

export interface NeuronsOptions {
  fraction: number;
  importance: 'product' | 'norm';
}

function rowSquares(m: OutIn, r: number): number {
  let s = 0;
  for (let c = r * m.cols; c < (r + 1) * m.cols; c++) s += m.data[c]! * m.data[c]!;
  return s;
}

function colSquares(m: OutIn, c: number): number {
  let s = 0;
  for (let r = 0; r < m.rows; r++) s += m.data[r * m.cols + c]! * m.data[r * m.cols + c]!;
  return s;
}

export const neurons: Method<NeuronsOptions> = {
  name: 'neurons',
  description: 'structured FFN intermediate-neuron pruning (zeroing) by ‖up/gate row‖·‖down column‖ or incoming-weight norm',
  reference: 'Li, Kadav, Durdanovic, Samet & Graf 2017, "Pruning Filters for Efficient ConvNets" §3.1 (norm of a unit\'s weights), applied to FFN neurons',
  needsCalibration: false,
  parseOptions(raw, where) {
    const r = new OptionReader(raw, 'recipe', where);
    const o: NeuronsOptions = { fraction: r.num('fraction', undefined, [0, 1]), importance: r.oneOf('importance', ['product', 'norm'] as const, 'product') };
    r.done();
    return o;
  },
  async apply(ctx, opts) {
    const layerIds = [...new Set(ctx.targets.filter((t) => t.module === 'ffn' && t.role === 'down').map((t) => t.layer))].sort((a, b) => a - b);
    if (layerIds.length === 0) throw new DikeError('recipe', 'neurons', 'the scope selects no FFN down projection (a layer is selected through its down matrix)');
    const reports: MatrixReport[] = [];
    for (const layer of layerIds) {
      const ffn = ctx.allLinears.filter((l) => l.layer === layer && l.module === 'ffn');
      const down = ffn.find((l) => l.role === 'down')!;
      const inputs = ffn.filter((l) => l.role === 'up' || l.role === 'gate');
      if (inputs.length === 0) throw new DikeError('recipe', `neurons layer ${layer}`, 'the architecture lists no up projection for this layer');
      const width = down.inDim;
      for (const l of inputs) if (l.outDim !== width) throw new DikeError('recipe', `neurons "${l.weight}"`, `output size ${l.outDim} ≠ the down projection's input size ${width}`);
      const inMats = inputs.map((l) => toOutIn(ctx.params.get(l.weight)!, l));
      const downMat = toOutIn(ctx.params.get(down.weight)!, down);
      const score = Array.from({ length: width }, (_, i) => {
        const u = Math.sqrt(inMats.reduce((s, m) => s + rowSquares(m, i), 0));
        return opts.importance === 'product' ? u * Math.sqrt(colSquares(downMat, i)) : u;
      });
      const k = Math.round(opts.fraction * width);
      const pruned = score.map((_, i) => i).sort((a, b) => score[a]! - score[b]! || a - b).slice(0, k).sort((a, b) => a - b);
      if (pruned.length === 0) continue;
      inputs.forEach((l, j) => {
        const m = inMats[j]!;
        const bias = l.bias !== undefined ? ctx.params.get(l.bias) : undefined;
        for (const i of pruned) {
          m.data.fill(0, i * m.cols, (i + 1) * m.cols);
          if (bias) bias.data[i] = 0;
        }
      });
      for (const i of pruned) for (let r = 0; r < downMat.rows; r++) downMat.data[r * downMat.cols + i] = 0;
      const detail = { importance: opts.importance, pruned_neurons: pruned.length, width };
      for (const [l, m] of [...inputs.map((l, j) => [l, inMats[j]!] as const), [down, downMat] as const] as [LinearInfo, OutIn][]) {
        const p = ctx.params.get(l.weight)!;
        fromOutIn(m, p, l);
        ctx.quantized.delete(l.weight);
        reports.push({ weight: l.weight, method: 'neurons', sparsity: zeroFraction(p.data), detail });
      }
    }
    return reports;
  },
};
