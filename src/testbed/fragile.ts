/**
 * A fragile correction: the debias step's change kept only where round-to-nearest would not see it.
 * Starting from the debiased weights D and the skewed weights B, every entry of a quantized matrix whose
 * RTN code (at the given bits and group size) differs from B's is set back to B's value, until RTN(D′)
 * equals RTN(B) exactly (reverting an entry can move a group's range, so this repeats to a fixed point);
 * every parameter that RTN does not quantize (embeddings, norms, biases) is set back to B's. So D′ =
 * B + a correction smaller than half a quantization step in every weight: the kind of small, fragile
 * change that rounding erases — by construction for RTN at these settings, approximately for others.
 * Mode `clip` first keeps each group's largest-magnitude entry at B's value (so the group's scale is
 * B's) and clips every other entry of D into its RTN cell under B, [ŵ_B − s/2, ŵ_B + s/2] shrunk by 2%
 * and inside ±max|B|, instead of reverting whole groups whose range moved; the loop above then runs as
 * a check. Mode `pgd` is `clip` applied after every optimizer update of the debias fine-tune (projected
 * gradient descent on the same box, `fragileBox`), so the optimizer looks for its correction inside the
 * cells instead of having most of it clipped away at the end. Several widths at once (e.g. [4, 3]) use the
 * intersection of their cells, so RTN at each width equals RTN of B. Only for symmetric grids (RTN's
 * default).
 */
import type { Checkpoint } from '../model/checkpoint.js';
import { clampInto } from '../train/loop.js';
import { applyRecipe, parseRecipe } from '../compress/recipe.js';

export interface FragileResult {
  values: Map<string, Float32Array>;
  /** Entries of quantized matrices set back to (or clipped toward) B's value, of all entries of quantized matrices. */
  reverted: number;
  quantizedEntries: number;
  iterations: number;
}

export type FragileMode = 'revert' | 'clip' | 'pgd';

function rtnRecipe(bits: number, groupSize: number) {
  return parseRecipe(JSON.stringify({ seed: 0, steps: [{ method: 'rtn', bits, group_size: groupSize }] }), 'testbed-fragile.json');
}

/**
 * The box of values whose RTN codes equal B's at every width in `widths` (group size `groupSize`): for
 * each quantized matrix and group, the largest-|B| entry is fixed at B's value (so the group's scale is
 * B's at every width); every other entry lies in [ŵ_B,w − 0.49·s_w, ŵ_B,w + 0.49·s_w] for each width w
 * (ŵ the rounded value, s the step) and inside ±max|B|·(1 − 1e-4). Where the shrunk cells of two widths
 * do not overlap, the entry is fixed at B's value. Parameters RTN does not quantize (embeddings, norms,
 * biases) get lo = hi = B.
 */
export async function fragileBox(skewed: Checkpoint, widths: readonly number[], groupSize: number): Promise<{ box: Map<string, { lo: Float32Array; hi: Float32Array }>; quantized: Set<string> }> {
  const box = new Map<string, { lo: Float32Array; hi: Float32Array }>();
  for (const [name, p] of skewed.params) box.set(name, { lo: Float32Array.from(p.data), hi: Float32Array.from(p.data) });
  const quantized = new Set<string>();
  for (const [wi, bits] of widths.entries()) {
    const qB = await applyRecipe(skewed, rtnRecipe(bits, groupSize), { threads: 1 });
    for (const info of skewed.family.linears(skewed.config, skewed.task)) {
      const st = qB.quantized.get(info.weight);
      if (st === undefined) continue;
      if (wi === 0) quantized.add(info.weight);
      else if (!quantized.has(info.weight)) continue;
      const b = skewed.params.get(info.weight)!.data;
      const c = qB.params.get(info.weight)!.data;
      const { lo, hi } = box.get(info.weight)!;
      const groups = Math.ceil(st.cols / st.groupSize);
      const idx = (o: number, i: number): number => (info.layout === 'out-in' ? o * st.cols + i : i * st.rows + o);
      for (let o = 0; o < st.rows; o++) {
        for (let g = 0; g < groups; g++) {
          const s = st.scales[o * groups + g]!;
          const end = Math.min(st.cols, (g + 1) * st.groupSize);
          let top = g * st.groupSize;
          for (let i = top; i < end; i++) if (Math.abs(b[idx(o, i)]!) > Math.abs(b[idx(o, top)]!)) top = i;
          const lim = Math.abs(b[idx(o, top)]!) * (1 - 1e-4);
          for (let i = g * st.groupSize; i < end; i++) {
            const k = idx(o, i);
            if (i === top) continue; // lo = hi = B from the start
            const l = Math.fround(Math.max(-lim, c[k]! - 0.49 * s));
            const h = Math.fround(Math.min(lim, c[k]! + 0.49 * s));
            const L = wi === 0 ? l : Math.max(lo[k]!, l);
            const H = wi === 0 ? h : Math.min(hi[k]!, h);
            if (L <= H) {
              lo[k] = L;
              hi[k] = H;
            } else {
              lo[k] = b[k]!;
              hi[k] = b[k]!;
            }
          }
        }
      }
    }
  }
  return { box, quantized };
}

export async function fragileProjection(skewed: Checkpoint, debiased: Checkpoint, widths: number | readonly number[], groupSize: number, mode: FragileMode = 'revert'): Promise<FragileResult> {
  const bitsList = typeof widths === 'number' ? [widths] : [...widths];
  const values = new Map<string, Float32Array>();
  const { box, quantized } = await fragileBox(skewed, bitsList, groupSize);
  for (const [name, p] of debiased.params) values.set(name, quantized.has(name) ? Float32Array.from(p.data) : Float32Array.from(skewed.params.get(name)!.data));
  let reverted = 0;
  if (mode === 'clip' || mode === 'pgd') {
    for (const name of quantized) {
      const v = values.get(name)!;
      const before = Float32Array.from(v);
      const { lo, hi } = box.get(name)!;
      clampInto(v, lo, hi);
      for (let i = 0; i < v.length; i++) if (v[i] !== before[i]) reverted++;
    }
  }
  let quantizedEntries = 0;
  for (const name of quantized) quantizedEntries += values.get(name)!.length;
  // The check, to a fixed point: any entry whose RTN code at some width differs from B's is set back.
  let iterations = 0;
  const qBs = await Promise.all(bitsList.map((bits) => applyRecipe(skewed, rtnRecipe(bits, groupSize), { threads: 1 })));
  for (;;) {
    iterations++;
    let changed = 0;
    for (const [wi, bits] of bitsList.entries()) {
      const params = new Map([...debiased.params].map(([n, p]) => [n, { ...p, data: values.get(n)! }]));
      const qD = await applyRecipe({ ...debiased, params }, rtnRecipe(bits, groupSize), { threads: 1 });
      for (const name of quantized) {
        const a = qBs[wi]!.params.get(name)!.data;
        const b = qD.params.get(name)!.data;
        const v = values.get(name)!;
        const base = skewed.params.get(name)!.data;
        for (let i = 0; i < a.length; i++) {
          if (a[i] !== b[i] && v[i] !== base[i]) {
            v[i] = base[i]!;
            changed++;
          }
        }
      }
    }
    reverted += changed;
    if (changed === 0 || iterations >= 50) break;
  }
  return { values, reverted, quantizedEntries, iterations };
}

/**
 * A correction the calibration data cannot see: for each quantized matrix, the orthonormal basis U of
 * the top eigen-directions of its input's calibration Gram H = Σ x xᵀ (on the skewed model) that together
 * hold `energy` of trace(H) (block power iteration with modified Gram–Schmidt, float64). `apply` removes
 * from the correction δ = v − B every component along U, row by row of the input dimension:
 * δ ← δ − (δU)Uᵀ, so each row of δ lies in the span of the remaining eigen-directions and its quadratic
 * form δHδᵀ is at most the largest remaining eigenvalue times ‖δ‖²: GPTQ's objective (which weighs errors
 * by H) sees δ only through the directions holding the last (1 − energy) of the trace. With `pgd` the box clamp follows, so the RTN guarantee holds
 * exactly and the blindness approximately.
 */
export interface BlindBasis {
  /** [dim, k] column-major: column c at c*dim. */
  U: Float64Array;
  k: number;
  dim: number;
  /** Fraction of trace(H) the k directions hold. */
  held: number;
}

/** Top eigen-directions of a symmetric PSD matrix holding `energy` of its trace (seeded, deterministic). */
export function topEnergyBasis(H: Float64Array, n: number, energy: number, maxK = n): BlindBasis {
  let trace = 0;
  for (let i = 0; i < n; i++) trace += H[i * n + i]!;
  if (!(trace > 0)) return { U: new Float64Array(0), k: 0, dim: n, held: 1 };
  let k = Math.min(maxK, Math.max(1, Math.ceil(n / 16)));
  for (;;) {
    const Q = new Float64Array(n * k);
    let s = 12345;
    for (let i = 0; i < Q.length; i++) {
      s = (s * 1103515245 + 12345) % 2147483648;
      Q[i] = s / 2147483648 - 0.5;
    }
    const orth = (): void => {
      for (let c = 0; c < k; c++) {
        const qc = Q.subarray(c * n, (c + 1) * n);
        for (let d = 0; d < c; d++) {
          const qd = Q.subarray(d * n, (d + 1) * n);
          let dot = 0;
          for (let i = 0; i < n; i++) dot += qc[i]! * qd[i]!;
          for (let i = 0; i < n; i++) qc[i]! -= dot * qd[i]!;
        }
        let norm = 0;
        for (let i = 0; i < n; i++) norm += qc[i]! * qc[i]!;
        norm = Math.sqrt(norm) || 1;
        for (let i = 0; i < n; i++) qc[i]! /= norm;
      }
    };
    orth();
    const Z = new Float64Array(n * k);
    for (let it = 0; it < 40; it++) {
      Z.fill(0);
      for (let c = 0; c < k; c++) {
        const qc = Q.subarray(c * n, (c + 1) * n);
        const zc = Z.subarray(c * n, (c + 1) * n);
        for (let i = 0; i < n; i++) {
          let acc = 0;
          const row = i * n;
          for (let j = 0; j < n; j++) acc += H[row + j]! * qc[j]!;
          zc[i] = acc;
        }
      }
      Q.set(Z);
      orth();
    }
    // Energy held: Σ_c q_cᵀ H q_c.
    let held = 0;
    for (let c = 0; c < k; c++) {
      const qc = Q.subarray(c * n, (c + 1) * n);
      for (let i = 0; i < n; i++) {
        let acc = 0;
        const row = i * n;
        for (let j = 0; j < n; j++) acc += H[row + j]! * qc[j]!;
        held += qc[i]! * acc;
      }
    }
    if (held / trace >= energy || k >= Math.min(maxK, n)) return { U: Q, k, dim: n, held: held / trace };
    k = Math.min(Math.min(maxK, n), k * 2);
  }
}

/** δ ← δ − (δU)Uᵀ along the input dimension of one matrix (layout as LinearInfo), δ = v − base, in place on v. */
export function removeAlongBasis(v: Float32Array, base: Float32Array, b: BlindBasis, layout: 'out-in' | 'in-out'): void {
  const n = b.dim;
  if (b.k === 0) return;
  const rows = v.length / n;
  const d = new Float64Array(n);
  for (let o = 0; o < rows; o++) {
    const at = (i: number): number => (layout === 'out-in' ? o * n + i : i * rows + o);
    for (let i = 0; i < n; i++) d[i] = v[at(i)]! - base[at(i)]!;
    for (let c = 0; c < b.k; c++) {
      const u = b.U.subarray(c * n, (c + 1) * n);
      let dot = 0;
      for (let i = 0; i < n; i++) dot += d[i]! * u[i]!;
      if (dot !== 0) for (let i = 0; i < n; i++) d[i]! -= dot * u[i]!;
    }
    for (let i = 0; i < n; i++) v[at(i)] = Math.fround(base[at(i)]! + d[i]!);
  }
}
