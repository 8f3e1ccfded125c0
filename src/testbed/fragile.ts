/**
 * A fragile correction: the debias step's change kept only where round-to-nearest would not see it.
 * Starting from the debiased weights D and the skewed weights B, every entry of a quantized matrix whose
 * RTN code (at the given bits and group size) differs from B's is set back to B's value, until RTN(D′)
 * equals RTN(B) exactly (reverting an entry can move a group's range, so this repeats to a fixed point);
 * every parameter that RTN does not quantize (embeddings, norms, biases) is set back to B's. So D′ =
 * B + a correction smaller than half a quantization step in every weight: the kind of small, fragile
 * change that rounding erases — by construction for RTN at these settings, approximately for others.
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

export async function fragileProjection(skewed: Checkpoint, debiased: Checkpoint, bits: number, groupSize: number): Promise<FragileResult> {
  const recipe = parseRecipe(JSON.stringify({ seed: 0, steps: [{ method: 'rtn', bits, group_size: groupSize }] }), 'testbed-fragile.json');
  const qB = await applyRecipe(skewed, recipe, { threads: 1 });
  const values = new Map<string, Float32Array>();
  for (const [name, p] of debiased.params) values.set(name, qB.quantized.has(name) ? Float32Array.from(p.data) : Float32Array.from(skewed.params.get(name)!.data));
  let reverted = 0;
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
