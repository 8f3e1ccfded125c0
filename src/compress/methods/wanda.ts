/**
 * Wanda (Sun, Liu, Bair & Kolter 2024, "A Simple and Effective Pruning Approach for Large Language
 * Models", eq. 1): the importance of weight W_ij (row i = output, column j = input) is
 *   S_ij = |W_ij| · ‖X_j‖₂,   ‖X_j‖₂² = Σ_tokens x_j² = (X Xᵀ)_jj (the Gram diagonal),
 * compared within each output row (the paper's per-output comparison group): every row loses its
 * lowest-scoring weights. No weight update. With N:M ("at most N non-zeros in every M consecutive
 * weights", the paper's semi-structured setting) the comparison group is each group of M inputs of
 * a row, aligned at input 0; M must divide the input dimension.
 *
 * Calibration: `sequential` (default) block by block as locuslab/wanda's prune_wanda, every map of
 * a block scored on the block's inputs with the earlier blocks pruned; `one-shot`: dense inputs.
 *
 * Counts: row r loses round(s·cols·(r+1)) − round(s·cols·r) weights, i.e. ⌊s·cols⌋ or ⌈s·cols⌉, so
 * that the matrix loses exactly round(s·rows·cols), as magnitude pruning does (the reference code
 * takes ⌊s·cols⌋ per row; the two agree whenever s·cols is an integer).
 */
import { DikeError } from '../../errors.js';
import { checkNM, countFor, markNM, markSmallest, parsePattern } from '../mask.js';
import { OptionReader } from '../options.js';
import { type Method, type MatrixReport, fromOutIn, toOutIn, zeroFraction } from '../types.js';
import { CALIBRATION_MODES, type CalibrationMode } from '../calibrate.js';

export interface WandaOptions {
  /** Fraction of each matrix to remove (unstructured); absent with `pattern`. */
  sparsity?: number;
  /** "N:M": keep at most N of every M consecutive inputs of a row. */
  pattern?: string;
  /** `sequential` (default, as locuslab/wanda prune_wanda): block by block, earlier blocks pruned; `one-shot`: the dense inputs. */
  calibration: CalibrationMode;
}

/** Reads `sparsity` or `pattern` (exactly one) for the pruning methods. */
export function readSparsityOrPattern(r: OptionReader, raw: Record<string, unknown>, where: string): { sparsity?: number; pattern?: string } {
  const hasS = raw['sparsity'] !== undefined;
  const hasP = raw['pattern'] !== undefined;
  if (hasS === hasP) throw new DikeError('recipe', where, hasS ? 'give "sparsity" or "pattern" (N:M), not both' : 'needs "sparsity" (a fraction) or "pattern" (N:M such as "2:4")');
  if (hasS) return { sparsity: r.num('sparsity', undefined, [0, 1]) };
  const { n, m } = r.pattern('pattern');
  return { pattern: `${n}:${m}` };
}

export const wanda: Method<WandaOptions> = {
  name: 'wanda',
  description: 'pruning by |weight| × input-activation norm, per output row (or N:M), no weight update',
  reference: 'Sun, Liu, Bair & Kolter 2024, "A Simple and Effective Pruning Approach for Large Language Models" (Wanda), eq. 1, per-output comparison group',
  needsCalibration: true,
  parseOptions(raw, where) {
    const r = new OptionReader(raw, 'recipe', where);
    const o = { ...readSparsityOrPattern(r, raw, where), calibration: r.oneOf('calibration', CALIBRATION_MODES, 'sequential') };
    r.done();
    return o;
  },
  async apply(ctx, opts) {
    const reports: MatrixReport[] = [];
    const nm = opts.pattern !== undefined ? parsePattern(opts.pattern) : undefined;
    // Sequential as the reference: every map of a block scored on the block's inputs with the earlier blocks pruned.
    await ctx.walk({ mode: opts.calibration, granularity: 'block' }, async (targets, stats) => {
      for (const t of targets) {
        const p = ctx.params.get(t.weight)!;
        const s = stats.get(t.weight);
        if (s === undefined) throw new DikeError('recipe', `wanda "${t.weight}"`, 'no calibration statistics for this matrix');
        const w = toOutIn(p, t);
        const { rows, cols } = w;
        if (nm) checkNM(cols, nm.m, t.weight, 'wanda');
        // S_ij = |W_ij| · ‖X_j‖₂ (eq. 1); the token count scales every score alike and is left out.
        const norm = new Float64Array(cols);
        for (let j = 0; j < cols; j++) norm[j] = Math.sqrt(Math.max(0, s.gram[j * cols + j]!));
        const scores = new Float64Array(rows * cols);
        for (let r = 0; r < rows; r++) for (let j = 0; j < cols; j++) scores[r * cols + j] = Math.abs(w.data[r * cols + j]!) * norm[j]!;
        const mask = new Uint8Array(rows * cols);
        for (let r = 0; r < rows; r++) {
          if (nm) markNM(scores, cols, r, 0, cols, nm.n, nm.m, mask);
          else markSmallest(scores.subarray(r * cols, (r + 1) * cols), countFor(opts.sparsity!, cols, r, r + 1), mask.subarray(r * cols, (r + 1) * cols));
        }
        let pruned = 0;
        for (let i = 0; i < mask.length; i++) {
          if (mask[i]) {
            w.data[i] = 0;
            pruned++;
          }
        }
        if (pruned > 0) {
          fromOutIn(w, p, t);
          ctx.quantized.delete(t.weight); // pruned values leave the integer grid
        }
        reports.push({
          weight: t.weight,
          method: 'wanda',
          sparsity: zeroFraction(p.data),
          detail: { comparison_group: nm ? `row, ${opts.pattern}` : 'row', pruned, calibration: opts.calibration },
        });
      }
    });
    return reports;
  },
};
