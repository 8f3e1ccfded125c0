/**
 * Recipes as a user writes them (YAML) through `dike compress --recipe` and `dike audit --variant
 * recipe.yaml`, an already-compressed directory as `--variant <dir>`, and the audit's promise that a
 * changed input is recomputed, end to end: one weight, one data row, one option (the scorer) changed in turn, only
 * the work that depends on it reruns, and the results change.
 */
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { DATA, dike, modelDir, scratchDir } from './fixtures.js';
import { readSafetensors, toFloat32, writeSafetensors } from '../src/model/safetensors.js';
import { openStore, storePath } from '../src/audit/store.js';
import type { AuditResults } from '../src/audit/types.js';

const RECIPE = `# FFN magnitude pruning, then 4-bit RTN of block 1's attention
seed: 3
steps:
  - method: magnitude
    sparsity: 0.5
    scope: { modules: [ffn] }
  - method: rtn
    bits: 4
    group_size: 32
    scope:
      modules: [attention]
      layers: [1]
`;

const weights = (dir: string): Map<string, Float32Array> => new Map([...readSafetensors(path.join(dir, 'model.safetensors')).tensors].map(([k, t]) => [k, toFloat32(t)]));

describe('YAML recipes', () => {
  const root = scratchDir('recipes');
  const recipe = path.join(root, 'ffn-then-attn.yaml');
  writeFileSync(recipe, RECIPE);
  const viaRecipe = path.join(root, 'via-recipe');
  before(() => {
    const r = dike(['compress', modelDir('tiny-bert-mlm'), '--recipe', recipe, '--out', viaRecipe]);
    assert.equal(r.code, 0, r.stderr);
  });

  it('dike compress --recipe applies the steps in order, each to its scope only, and records them', () => {
    const dense = weights(modelDir('tiny-bert-mlm'));
    const got = weights(viaRecipe);
    const ffn = /^bert\.encoder\.layer\.\d\.(intermediate|output)\.dense\.weight$/;
    const attn1 = /^bert\.encoder\.layer\.1\.attention\.(self\.(query|key|value)|output\.dense)\.weight$/;
    let checked = 0;
    for (const [k, d] of dense) {
      const g = got.get(k)!;
      if (ffn.test(k)) {
        // Half of the entries are 0, and every zeroed |w| is ≤ every kept |w|.
        assert.equal(g.filter((v) => v === 0).length, Math.round(0.5 * g.length), k);
        let maxZeroed = 0;
        let minKept = Infinity;
        g.forEach((v, i) => (v === 0 ? (maxZeroed = Math.max(maxZeroed, Math.abs(d[i]!))) : (minKept = Math.min(minKept, Math.abs(d[i]!)), assert.equal(v, d[i], `${k}[${i}] kept as is`))));
        assert.ok(maxZeroed <= minKept, k);
        checked++;
      } else if (attn1.test(k)) {
        // 4 bits in groups of 32 along the input (rows of [out, in]): at most 16 distinct values per group.
        assert.notDeepEqual(g, d, k);
        for (let i = 0; i < g.length; i += 32) assert.ok(new Set(g.subarray(i, i + 32)).size <= 16, `${k} group at ${i}`);
        checked++;
      } else assert.deepEqual(g, d, `${k} untouched`);
    }
    assert.equal(checked, 2 * 2 + 4);
    const rec = JSON.parse(readFileSync(path.join(viaRecipe, 'compression.json'), 'utf8')) as { recipe: { seed: number; steps: { method: string }[] } };
    assert.equal(rec.recipe.seed, 3);
    assert.deepEqual(rec.recipe.steps.map((s) => s.method), ['magnitude', 'rtn']);
  });

  it('a one-step YAML recipe equals the same method given as flags', () => {
    const one = path.join(root, 'one.yml');
    writeFileSync(one, 'steps:\n  - method: magnitude\n    sparsity: 0.5\n    scope: { modules: [ffn] }\n');
    const a = path.join(root, 'one-recipe');
    const b = path.join(root, 'one-flags');
    assert.equal(dike(['compress', modelDir('tiny-bert-mlm'), '--recipe', one, '--out', a]).code, 0);
    const r = dike(['compress', modelDir('tiny-bert-mlm'), '--method', 'magnitude', '--sparsity', '0.5', '--modules', 'ffn', '--out', b]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(readFileSync(path.join(a, 'model.safetensors')), readFileSync(path.join(b, 'model.safetensors')));
  });

  it('a bad YAML recipe is one line naming the file and the step', () => {
    const bad = path.join(root, 'bad.yaml');
    writeFileSync(bad, 'steps:\n  - method: magnitude\n    sparsity: 1.5\n');
    const r = dike(['compress', modelDir('tiny-bert-mlm'), '--recipe', bad, '--out', path.join(root, 'never')]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr.trim(), /^dike: .*step 1.*sparsity/);
    assert.equal(r.stderr.trim().split('\n').length, 1);
  });

  describe('dike audit with --variant recipe.yaml and --variant <dir>; a changed input is recomputed', () => {
    // Scratch copies of the model and of the data that the test changes.
    const model = path.join(root, 'model');
    const data = path.join(root, 'data');
    const out = path.join(root, 'audit');
    const compressed = path.join(root, 'compressed');
    cpSync(modelDir('tiny-bert-mlm'), model, { recursive: true });
    mkdirSync(data);
    cpSync(path.join(DATA, 'crows-pairs'), path.join(data, 'crows-pairs'), { recursive: true });
    const args = (...extra: string[]): string[] => [
      'audit', '--model', model, '--variant', recipe, '--variant', compressed, '--benchmark', 'crows-pairs', '--data', data,
      '--limit', '16', '--quality-lines', '0', '--threads', '1', '--out', out, '--quiet', ...extra,
    ];
    const audit = (...extra: string[]): AuditResults => {
      const r = dike(args(...extra));
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(readFileSync(path.join(out, 'results.json'), 'utf8')) as AuditResults;
    };
    const doneKeys = (): string[] => {
      const s = openStore(storePath(out));
      try {
        return s.listRuns({ status: 'done' }).map((r) => r.key);
      } finally {
        s.close();
      }
    };
    /** Every finished run in the store: its key, its model's name and its item scores. */
    const storedRuns = (): { key: string; name: string; items: Map<string, number> }[] => {
      const s = openStore(storePath(out));
      try {
        return s.listRuns({ status: 'done' }).map((r) => ({
          key: r.key,
          name: s.getModel(r.modelId)!.name,
          items: new Map(s.findRun(r.key)!.result.items.map((i) => [i.id, i.score])),
        }));
      } finally {
        s.close();
      }
    };
    const newRuns = (before: string[]): ReturnType<typeof storedRuns> => storedRuns().filter((r) => !before.includes(r.key));
    const lastRunOf = (name: string, keysThen: string[]): Map<string, number> => storedRuns().filter((r) => r.name === name && keysThen.includes(r.key)).at(-1)!.items;
    let first: AuditResults;
    let keys: string[];
    const prunedWeights = (): number => statSync(path.join(out, 'variants', 'ffn-then-attn', 'model.safetensors')).mtimeMs;

    before(() => {
      cpSync(viaRecipe, compressed, { recursive: true });
      first = audit();
      keys = doneKeys();
    });

    it('names the variants after the recipe file and the directory, and compresses the recipe as dike compress does', () => {
      assert.deepEqual(first.variants.map((v) => [v.name, v.spec]), [['ffn-then-attn', 'recipe ffn-then-attn.yaml'], ['compressed', `directory ${compressed}`]]);
      // The recipe compressed inside the audit and the directory compressed by `dike compress --recipe`
      // are the same weights, so they score the same.
      assert.equal(first.variants[0]!.weightsSha256, first.variants[1]!.weightsSha256);
      assert.deepEqual(readFileSync(path.join(out, 'variants', 'ffn-then-attn', 'model.safetensors')), readFileSync(path.join(compressed, 'model.safetensors')));
      const [a, b] = first.benchmarks[0]!.variants;
      assert.deepEqual(a!.overall, b!.overall);
      assert.equal(keys.length, 3, 'one run per model');
    });

    it('rerun unchanged: nothing recomputed, the same results', () => {
      const t = prunedWeights();
      const again = audit();
      assert.deepEqual(doneKeys(), keys);
      assert.equal(prunedWeights(), t, 'the recipe variant is not compressed again');
      assert.deepEqual(again.benchmarks, first.benchmarks);
    });

    it('one weight of the dense model changed: the dense run and the recipe variant are redone, the directory variant is reused', () => {
      const f = path.join(model, 'model.safetensors');
      const st = readSafetensors(f);
      const name = 'bert.encoder.layer.0.intermediate.dense.weight';
      const t = st.tensors.get(name)!;
      const w = toFloat32(t);
      // The largest |w| of the matrix, so that magnitude pruning keeps it and the variant differs too.
      let i = 0;
      for (let j = 1; j < w.length; j++) if (Math.abs(w[j]!) > Math.abs(w[i]!)) i = j;
      w[i] = w[i]! * 3;
      st.tensors.set(name, { dtype: 'F32', shape: t.shape, bytes: new Uint8Array(w.buffer) });
      writeSafetensors(f, st.tensors, st.metadata);
      const t0 = prunedWeights();
      const r = audit();
      const now = doneKeys();
      const added = now.filter((k) => !keys.includes(k));
      // New: the changed dense model and the re-compressed recipe variant; the directory variant's run is reused.
      assert.equal(added.length, 2, `new runs ${added.length}`);
      assert.ok(prunedWeights() > t0, 'the recipe variant is compressed again from the changed dense model');
      assert.notEqual(r.variants[0]!.weightsSha256, r.variants[1]!.weightsSha256);
      assert.equal(r.variants[1]!.weightsSha256, first.variants[1]!.weightsSha256);
      // The results change: the new runs' item scores differ from the old runs' of the same model.
      for (const run of newRuns(keys)) {
        const old = lastRunOf(run.name, keys);
        assert.ok([...run.items].some(([id, v]) => v !== old.get(id)), `${run.name}: item scores change`);
      }
      assert.deepEqual(new Set(newRuns(keys).map((x) => x.name)), new Set(['dense', 'ffn-then-attn']));
      keys = now;
      first = r;
    });

    it('one data row changed: every model reruns on the new data, that item\'s scores change', () => {
      const csv = path.join(data, 'crows-pairs', 'crows_pairs_anonymized.csv');
      const text = readFileSync(csv, 'utf8');
      const lines = text.split('\n');
      // Row 2 of the data (line 4): one more word in both sentences changes both scores.
      const cols = lines[3]!.split(',');
      assert.equal(cols[0], '2');
      writeFileSync(csv, text.replace(lines[3]!, lines[3]!.replace(/\.(",|,)/g, ' indeed.$1')));
      assert.notEqual(readFileSync(csv, 'utf8'), text);
      const r = audit();
      const now = doneKeys();
      assert.equal(now.filter((k) => !keys.includes(k)).length, 3, 'every model runs on the new data');
      // Pair 2's scores change for every model; every other pair keeps its score.
      for (const run of newRuns(keys)) {
        const old = lastRunOf(run.name, keys);
        assert.deepEqual([...run.items.keys()], [...old.keys()]);
        for (const [id, v] of run.items) {
          if (id === '2') assert.notEqual(v, old.get(id), `${run.name}: pair 2 changes`);
          else assert.equal(v, old.get(id), `${run.name}: pair ${id} unchanged`);
        }
      }
      assert.ok(r.benchmarks[0]!.dense.overall.n === first.benchmarks[0]!.dense.overall.n);
      keys = now;
      first = r;
    });

    it('one option changed (--scorer): every run is redone, no compression, the item scores change', () => {
      const t0 = prunedWeights();
      const r = audit('--scorer', 'diff-mean');
      const now = doneKeys();
      assert.equal(now.filter((k) => !keys.includes(k)).length, 3, 'every model runs with the new option');
      assert.equal(prunedWeights(), t0, 'compression does not depend on the scorer');
      assert.equal(r.benchmarks[0]!.scorer, 'diff-mean');
      for (const run of newRuns(keys)) {
        const old = lastRunOf(run.name, keys);
        assert.ok([...run.items].every(([id, v]) => v !== old.get(id)), `${run.name}: every item is scored anew`);
      }
    });
  });
});
