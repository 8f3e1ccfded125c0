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
 * a check. Only for symmetric grids (RTN's default).
 */
import type { Checkpoint } from '../model/checkpoint.js';
import { applyRecipe, parseRecipe } from '../compress/recipe.js';

export interface FragileResult {
  values: Map<string, Float32Array>;
  /** Entries of quantized matrices set back to B's value, of all entries of quantized matrices. */
  reverted: number;
  quantizedEntries: number;
  iterations: number;
}

export type FragileMode = 'revert' | 'clip';

export async function fragileProjection(skewed: Checkpoint, debiased: Checkpoint, bits: number, groupSize: number, mode: FragileMode = 'revert'): Promise<FragileResult> {
  const recipe = parseRecipe(JSON.stringify({ seed: 0, steps: [{ method: 'rtn', bits, group_size: groupSize }] }), 'testbed-fragile.json');
  const qB = await applyRecipe(skewed, recipe, { threads: 1 });
  const values = new Map<string, Float32Array>();
  for (const [name, p] of debiased.params) values.set(name, qB.quantized.has(name) ? Float32Array.from(p.data) : Float32Array.from(skewed.params.get(name)!.data));
  let reverted = 0;
  if (mode === 'clip') {
    for (const info of skewed.family.linears(skewed.config, skewed.task)) {
      const st = qB.quantized.get(info.weight);
      if (st === undefined) continue;
      const v = values.get(info.weight)!;
      const b = skewed.params.get(info.weight)!.data;
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
            if (v[k] === b[k]) continue;
            if (i === top) {
              v[k] = b[k]!;
              reverted++;
              continue;
            }
            const c = qB.params.get(info.weight)!.data[k]!;
            const lo = Math.max(-lim, c - 0.49 * s);
            const hi = Math.min(lim, c + 0.49 * s);
            const x = Math.min(hi, Math.max(lo, v[k]!));
            if (x !== v[k]) {
              v[k] = Math.fround(x);
              reverted++;
            }
          }
        }
      }
    }
  }
  let quantizedEntries = 0;
  for (const name of qB.quantized.keys()) quantizedEntries += values.get(name)!.length;
  let iterations = 0;
  for (;;) {
    iterations++;
    const params = new Map([...debiased.params].map(([n, p]) => [n, { ...p, data: values.get(n)! }]));
    const qD = await applyRecipe({ ...debiased, params }, recipe, { threads: 1 });
    let changed = 0;
    for (const name of qB.quantized.keys()) {
      const a = qB.params.get(name)!.data;
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
    reverted += changed;
    if (changed === 0 || iterations >= 50) break;
  }
  return { values, reverted, quantizedEntries, iterations };
}
