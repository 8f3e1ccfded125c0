/**
 * The pruning-fragile box (src/testbed/fragile-prune.ts): any point of it prunes, under the real
 * magnitude and Wanda methods (src/compress/methods), to exactly what the skewed model prunes to; a box
 * with its margin planted the wrong way (bounds above the threshold) does not. Both weight layouts:
 * dike-gpt2-mini (Conv1D, [in, out]) and dike-bert-mini ([out, in]).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { embeddedModelDir, corpusFile } from '../src/embedded.js';
import { loadCheckpoint, type Checkpoint } from '../src/model/checkpoint.js';
import { applyRecipe } from '../src/compress/recipe.js';
import { pruneFragileBox, pruneRecipe, type PruneFragileSpec, type Pruner } from '../src/testbed/fragile-prune.js';
import { Rng } from '../src/util/rng.js';

const spec = (pruners: Pruner[]): PruneFragileSpec => ({ sparsity: 0.5, pruners, calibration: { file: corpusFile('train').file, samples: 32, seq: 64, seed: 20260101 } });

/** B with every free entry of the box moved to a seeded point of its interval: `corner` at ±bound, else uniform. */
function pointIn(B: Checkpoint, box: Map<string, { lo: Float32Array; hi: Float32Array }>, seed: number, corner: boolean): Checkpoint {
  const rng = new Rng(seed);
  const rnd = (): number => rng.nextU32() / 2 ** 32;
  const params = new Map([...B.params].map(([n, p]) => {
    const { lo, hi } = box.get(n)!;
    const v = Float32Array.from(p.data);
    for (let k = 0; k < v.length; k++) {
      if (lo[k] === hi[k]) continue;
      const u = rnd();
      v[k] = corner ? (u < 0.5 ? lo[k]! : hi[k]!) : Math.fround(lo[k]! + (hi[k]! - lo[k]!) * u);
    }
    return [n, { ...p, data: v }];
  }));
  return { ...B, params };
}

async function differing(a: Checkpoint, b: Checkpoint, pr: Pruner): Promise<{ differ: number; total: number }> {
  const [pa, pb] = [await applyRecipe(a, pruneRecipe(spec([pr]), pr), { threads: 1 }), await applyRecipe(b, pruneRecipe(spec([pr]), pr), { threads: 1 })];
  let differ = 0;
  let total = 0;
  for (const info of a.family.linears(a.config, a.task)) {
    const x = pa.params.get(info.weight)!.data;
    const y = pb.params.get(info.weight)!.data;
    total += x.length;
    for (let k = 0; k < x.length; k++) if (x[k] !== y[k]) differ++;
  }
  return { differ, total };
}

for (const model of ['dike-gpt2-mini', 'dike-bert-mini'] as const) {
  describe(`pruning-fragile box on ${model}`, () => {
    const B = loadCheckpoint(embeddedModelDir(model));

    it('magnitude: every point of the box prunes to B\'s result exactly; kept entries and unpruned parameters are fixed', async () => {
      const fb = await pruneFragileBox(B, spec(['magnitude']));
      assert.ok(fb.free > 0.45 * fb.entries && fb.free <= 0.5 * fb.entries + 1, `about half the entries are free (${fb.free} of ${fb.entries})`);
      for (const [n, p] of B.params) {
        const { lo, hi } = fb.box.get(n)!;
        for (let k = 0; k < p.data.length; k++) {
          if (lo[k] === hi[k]) assert.equal(lo[k], p.data[k], `${n}[${k}] fixed at B`);
          else assert.ok(fb.pruned.has(n) && lo[k] === -hi[k]!, `${n}[${k}] free only in pruned matrices, symmetric`);
        }
      }
      for (const [seed, corner] of [[1, false], [2, true]] as const) {
        const { differ, total } = await differing(pointIn(B, fb.box, seed, corner), B, 'magnitude');
        assert.ok(total > 0);
        assert.equal(differ, 0, `seed ${seed}${corner ? ' (corners)' : ''}: magnitude result equals B's`);
      }
    });

    it('magnitude: a planted defect (bounds 5% above the threshold) changes the result', async () => {
      const fb = await pruneFragileBox(B, spec(['magnitude']), { magnitude: -0.05 });
      const { differ } = await differing(pointIn(B, fb.box, 2, true), B, 'magnitude');
      assert.ok(differ > 0, 'the too-wide box is caught');
    });

    it('magnitude and Wanda: a point of the joint box prunes to B\'s result under both', async () => {
      const fb = await pruneFragileBox(B, spec(['magnitude', 'wanda']));
      const mag = await pruneFragileBox(B, spec(['magnitude']));
      assert.ok(fb.free > 0.05 * fb.entries && fb.free < mag.free, `the joint box is narrower than magnitude's (${fb.free} < ${mag.free})`);
      for (const corner of [false, true]) {
        const P = pointIn(B, fb.box, 3, corner);
        for (const pr of ['magnitude', 'wanda'] as const) assert.equal((await differing(P, B, pr)).differ, 0, `${pr}${corner ? ' (corners)' : ''}`);
      }
      const bad = await pruneFragileBox(B, spec(['wanda']), { wanda: -0.05 });
      assert.ok((await differing(pointIn(B, bad.box, 3, true), B, 'wanda')).differ > 0, 'a Wanda box 5% too wide is caught');
    });
  });
}
