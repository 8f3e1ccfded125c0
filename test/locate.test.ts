/**
 * dike locate: units and narrowed recipes, rank statistics, the objective and its gradient, exact
 * consistency with `dike audit` on a scoped recipe, resumability, the command line.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import test from 'node:test';
import { spawn } from 'node:child_process';
import { loadCheckpoint, type Checkpoint } from '../src/model/checkpoint.js';
import { parseRecipe } from '../src/compress/recipe.js';
import { parseVariant, runAudit } from '../src/audit/audit.js';
import { openStore, storePath } from '../src/audit/store.js';
import { crowsPairs } from '../src/measure/crows-pairs.js';
import { stereoset } from '../src/measure/stereoset.js';
import { winoBias } from '../src/measure/winobias.js';
import { bbq } from '../src/measure/bbq.js';
import type { Benchmark } from '../src/measure/types.js';
import { ModelRunner } from '../src/runtime/session.js';
import { objectiveGradient, firstOrderChange } from '../src/locate/gradient.js';
import { averageRanks, byMagnitude, spearman } from '../src/locate/stats.js';
import { headEntries, leaveOneIn, leaveOneOut, unitsOf } from '../src/locate/units.js';
import { runLocate, type LocateResults } from '../src/locate/locate.js';
import { pessimisticRank, plantedTrial } from '../src/locate/plant.js';
import { assertOneLineError, CLI, DATA as SHARED_DATA, dike, modelDir, repoRoot, scratchDir } from './fixtures.js';

const TINY = modelDir('tiny-bert-mlm');
const DATA = path.join(repoRoot(), 'data');

test('spearman: known values (hand-computed) and average ranks for ties', () => {
  // d² = 0 + 1 + 1 + 0 = 2 → ρ = 1 − 6·2 / (4·15) = 0.8
  assert.equal(spearman([1, 2, 3, 4], [1, 3, 2, 4]), 0.8);
  assert.equal(spearman([1, 2, 3], [30, 20, 10]), -1);
  // scipy.stats.rankdata([10, 20, 20, 5]) = [2, 3.5, 3.5, 1]
  assert.deepEqual(averageRanks([10, 20, 20, 5]), [2, 3.5, 3.5, 1]);
  assert.ok(Number.isNaN(spearman([1, 1, 1], [1, 2, 3])));
  assert.deepEqual(byMagnitude([0.1, -3, 2, NaN]), [1, 2, 0, 3]);
});

test('units and narrowed recipes: leave-one-in is the scope {modules: [m], layers: [l]}, leave-one-out excludes the unit', () => {
  const ck = loadCheckpoint(TINY);
  const linears = ck.family.linears(ck.config, ck.task);
  const recipe = parseRecipe(JSON.stringify({ seed: 3, steps: [{ method: 'magnitude', sparsity: 0.5 }] }), 'r.json');
  const units = unitsOf(linears, recipe, 'layer-module');
  assert.deepEqual(units.map((u) => u.label), ['L0.attention', 'L0.ffn', 'L1.attention', 'L1.ffn']);
  assert.deepEqual(units[3]!.weights, ['bert.encoder.layer.1.intermediate.dense.weight', 'bert.encoder.layer.1.output.dense.weight']);
  const inn = leaveOneIn(linears, recipe, units[3]!)!;
  assert.equal(inn.seed, 3);
  assert.deepEqual(inn.steps[0]!.scope, { modules: ['ffn'], layers: [1] });
  assert.deepEqual(inn.steps[0]!.options, { sparsity: 0.5 });
  const out = leaveOneOut(linears, recipe, units[3]!)!;
  assert.deepEqual(out.steps[0]!.scope.exclude, units[3]!.weights);
  const matrices = unitsOf(linears, recipe, 'matrix');
  assert.equal(matrices.length, 12); // 2 layers × (q, k, v, o, up, down)
  assert.equal(matrices[0]!.label, 'L0.attention.self.query');
  assert.deepEqual(leaveOneIn(linears, recipe, matrices[0]!)!.steps[0]!.scope, { modules: ['attention'], layers: [0], include: ['bert.encoder.layer.0.attention.self.query.weight'] });
  // A recipe scoped to FFN of layer 0 has one layer-module unit; units it does not touch are not listed.
  const scoped = parseRecipe(JSON.stringify({ steps: [{ method: 'rtn', bits: 4, scope: { modules: ['ffn'], layers: [0] } }] }), 'r.json');
  assert.deepEqual(unitsOf(linears, scoped, 'layer-module').map((u) => u.label), ['L0.ffn']);
  assert.equal(leaveOneOut(linears, scoped, unitsOf(linears, scoped, 'layer-module')[0]!), undefined);
});

test('the objective is the benchmark\'s own item score, and its gradient predicts a small step to first order', async () => {
  const ck = loadCheckpoint(TINY);
  const limit = 12;
  const runner = await ModelRunner.create(ck, { threads: 2 });
  const items = await crowsPairs.objective!({ ckpt: ck, runner, dataDir: DATA }, { scorer: 'nangia-pll', limit });
  const scored = await crowsPairs.run({ ckpt: ck, runner, dataDir: DATA }, { scorer: 'nangia-pll', seed: 0, resamples: 1000, limit });
  await runner.dispose();
  const J = scored.items.reduce((s, i) => s + i.score, 0);
  const w = 'bert.encoder.layer.1.output.dense.weight';
  const g = await objectiveGradient(ck, items, [w], { threads: 2, padId: 0 });
  // Σ item scores from the benchmark vs the gradient graph's loss: float32 sums in different orders
  // (measured |diff| 1.7e-5 here; 8e-5 over 100 items of dike-bert-mini).
  assert.ok(Math.abs(g.objective - J) < 1e-4, `objective ${g.objective} vs scored ${J}`);
  // Finite difference along the gradient direction: J(W + εd) − J(W) ≈ ε g·d (central difference).
  const d = g.grads.get(w)!;
  let norm = 0;
  for (const x of d) norm += x * x;
  // A step of norm 0.1: J is scored in float32 (its evaluation noise measured ≈ 6e-6 nats here, i.e.
  // 2e-4 of the difference at norm 0.05, where an earlier bound of 1e-4 passed only by chance), and the
  // central difference's curvature error grows as the step cubed (≈ 5e-5 relative at 0.1, 7e-4 at 0.4).
  const eps = 0.1 / Math.sqrt(norm);
  const shifted = (sign: number): Map<string, { data: Float32Array }> => {
    const p = ck.params.get(w)!;
    return new Map([[w, { data: Float32Array.from(p.data, (x, i) => x + sign * eps * d[i]!) }]]);
  };
  const scoreAt = async (sign: number): Promise<number> => {
    const params = new Map(ck.params);
    params.set(w, { ...ck.params.get(w)!, data: shifted(sign).get(w)!.data });
    const m = { ...ck, params };
    const r = await ModelRunner.create(m, { threads: 2 });
    try {
      const res = await crowsPairs.run({ ckpt: m, runner: r, dataDir: DATA }, { scorer: 'nangia-pll', seed: 0, resamples: 1000, limit });
      return res.items.reduce((s, i) => s + i.score, 0);
    } finally {
      await r.dispose();
    }
  };
  const fd = (await scoreAt(1)) - (await scoreAt(-1));
  const predicted = firstOrderChange(g.grads, ck.params, shifted(1), [w]) - firstOrderChange(g.grads, ck.params, shifted(-1), [w]);
  // Relative error of the central difference (measured 1.1e-4: float32 scoring noise and curvature;
  // a gradient missing one of the ~300 masked copies or one weight row is off by far more).
  assert.ok(Math.abs(fd - predicted) / Math.abs(predicted) < 5e-4, `finite difference ${fd} vs first order ${predicted}`);
  // Batching (length buckets, fillers) does not change the gradient: the sum of one-sequence gradients.
  const few = items.slice(0, 2);
  const batched = (await objectiveGradient(ck, few, [w], { threads: 2, padId: 0 })).grads.get(w)!;
  const single = new Float64Array(batched.length);
  let scale = 0; // Σ over sequences of |their gradient|²: the size float32 rounding is relative to
  for (const t of few.flatMap((i) => i.terms)) {
    const one = (await objectiveGradient(ck, [{ id: 'x', group: 'x', terms: [t] }], [w], { threads: 2, padId: 0 })).grads.get(w)!;
    for (let i = 0; i < one.length; i++) (single[i]! += one[i]!), (scale += one[i]! ** 2);
  }
  let num = 0;
  for (let i = 0; i < single.length; i++) num += (batched[i]! - single[i]!) ** 2;
  // float32 sums in other orders (the ± terms of a pair cancel, so the scale is the terms', not the sum's).
  assert.ok(Math.sqrt(num / scale) < 1e-5, `batched vs one at a time: relative difference ${Math.sqrt(num / scale)}`);
});

/** J(W) = Σ item scores as the benchmark's own run computes them, with one weight replaced. */
async function scoredSum(benchmark: Benchmark, ck: Checkpoint, scorer: string, limit: number, w?: string, data?: Float32Array, dataDir = DATA): Promise<number> {
  const params = new Map(ck.params);
  if (w !== undefined) params.set(w, { ...ck.params.get(w)!, data: data! });
  const m = { ...ck, params };
  const r = await ModelRunner.create(m, { threads: 2 });
  try {
    const res = await benchmark.run({ ckpt: m, runner: r, dataDir }, { scorer, seed: 0, resamples: 10, limit });
    return res.items.reduce((s, i) => s + i.score, 0);
  } finally {
    await r.dispose();
  }
}

for (const [model, scorer, w] of [
  ['tiny-bert-mlm', 'mlm-fill', 'bert.encoder.layer.0.intermediate.dense.weight'],
  ['tiny-gpt2', 'causal-gmean', 'transformer.h.1.attn.c_attn.weight'],
] as const) {
  test(`StereoSet's objective (${scorer}, linearized at the dense weights): its gradient predicts a small step to first order`, async () => {
    const ck = loadCheckpoint(modelDir(model));
    const limit = 10;
    const runner = await ModelRunner.create(ck, { threads: 2 });
    const items = await stereoset.objective!({ ckpt: ck, runner, dataDir: DATA }, { scorer, limit });
    await runner.dispose();
    assert.equal(items.length, limit);
    assert.ok(items.every((i) => i.linearized === true && i.terms.length >= 2));
    const g = (await objectiveGradient(ck, items, [w], { threads: 2, padId: ck.tokenizer.special.pad ?? 0 })).grads.get(w)!;
    let norm = 0;
    for (const x of g) norm += x * x;
    // Central differences of J, scored by stereoset.run (the definition: mean probability of the filler
    // subtokens / geometric-mean token probability), along the gradient at steps of norm h and 2h:
    // D(h) = J(W + hĝ) − J(W − hĝ) = 2h|g| + c·h³ + O(h⁵), so (8·D(h) − D(2h)) / 6 = 2h|g| + O(h⁵)
    // (Richardson; the probabilities' curvature is large: the plain difference is off by 1.6% at h = 0.1
    // for causal-gmean).
    const p = ck.params.get(w)!.data;
    const D = async (h: number): Promise<number> => {
      const at = (sign: number): Float32Array => Float32Array.from(p, (x, i) => x + (sign * h * g[i]!) / Math.sqrt(norm));
      return (await scoredSum(stereoset, ck, scorer, limit, w, at(1))) - (await scoredSum(stereoset, ck, scorer, limit, w, at(-1)));
    };
    const h = 0.025;
    const fd = (8 * (await D(h)) - (await D(2 * h))) / 6;
    const predicted = 2 * h * Math.sqrt(norm); // g · (2h ĝ)
    // Measured relative error 7e-5 (mlm-fill) and 2.5e-5 (causal-gmean): float32 scoring noise; at
    // h = 0.1 the O(h⁵) term reaches 1.5e-3 for causal-gmean.
    assert.ok(Math.abs(fd - predicted) / Math.abs(predicted) < 5e-4, `finite difference ${fd} vs first order ${predicted}`);
  });
}

// h: the step, where float32 scoring noise (∝ 1/h) and the O(h⁵) term balance; measured relative
// errors at h = 0.05 / 0.1: WinoBias pll 1.8e-4 / 6e-6, pronoun 4e-6 / 4e-5, sum-ll 2e-5 / 2.7e-4;
// BBQ pll 3.2e-4 / 4e-6, sum-ll (h = 0.025 / 0.05 / 0.1) 8.5e-6 / 1.5e-4 / 2.2e-3.
for (const [benchmark, model, scorer, w, h, limit, n] of [
  // WinoBias --limit 3: the first 3 pairs of each of the 4 (type, split) files; BBQ --limit 1: one example per category.
  [winoBias, 'tiny-bert-mlm', 'pll', 'bert.encoder.layer.1.attention.self.value.weight', 0.1, 3, 12],
  [winoBias, 'tiny-bert-mlm', 'pronoun', 'bert.encoder.layer.1.intermediate.dense.weight', 0.05, 3, 12],
  [winoBias, 'tiny-gpt2', 'sum-ll', 'transformer.h.0.mlp.c_fc.weight', 0.05, 3, 12],
  [bbq, 'tiny-bert-mlm', 'pll', 'bert.encoder.layer.0.attention.output.dense.weight', 0.1, 1, 7],
  [bbq, 'tiny-gpt2', 'sum-ll', 'transformer.h.1.mlp.c_proj.weight', 0.025, 1, 7],
] as const) {
  test(`${benchmark.name}'s objective (${scorer}) is its item score, and its gradient predicts a small step to first order`, async () => {
    const ck = loadCheckpoint(modelDir(model));
    const runner = await ModelRunner.create(ck, { threads: 2 });
    const items = await benchmark.objective!({ ckpt: ck, runner, dataDir: SHARED_DATA }, { scorer, limit });
    await runner.dispose();
    assert.equal(items.length, n);
    const out = await objectiveGradient(ck, items, [w], { threads: 2, padId: ck.tokenizer.special.pad ?? 0 });
    const J = await scoredSum(benchmark, ck, scorer, limit, undefined, undefined, SHARED_DATA);
    // Σ item scores of winoBias.run vs the gradient graph's J: float32 sums in different orders.
    assert.ok(Math.abs(out.objective - J) < 1e-4 * Math.max(1, Math.abs(J)), `objective ${out.objective} vs scored ${J}`);
    const g = out.grads.get(w)!;
    let norm = 0;
    for (const x of g) norm += x * x;
    const p = ck.params.get(w)!.data;
    const D = async (h: number): Promise<number> => {
      const at = (sign: number): Float32Array => Float32Array.from(p, (x, i) => x + (sign * h * g[i]!) / Math.sqrt(norm));
      return (await scoredSum(benchmark, ck, scorer, limit, w, at(1), SHARED_DATA)) - (await scoredSum(benchmark, ck, scorer, limit, w, at(-1), SHARED_DATA));
    };
    // Richardson-extrapolated central difference, as for StereoSet.
    const fd = (8 * (await D(h)) - (await D(2 * h))) / 6;
    const predicted = 2 * h * Math.sqrt(norm);
    assert.ok(Math.abs(fd - predicted) / Math.abs(predicted) < 5e-4, `finite difference ${fd} vs first order ${predicted}`);
  });
}

function unitOf(r: LocateResults, label: string) {
  const u = r.benchmarks[0]!.units.find((x) => x.unit === label);
  assert.ok(u, label);
  return u;
}

for (const spec of ['magnitude:sparsity=0.5', 'rtn:bits=4,group_size=32']) {
  test(`consistency: a leave-one-in unit equals dike audit on the scoped recipe exactly (${spec})`, async () => {
    const out = scratchDir('locate');
    const limit = 60;
    const common = { model: TINY, benchmarks: ['crows-pairs'], dataDir: DATA, seed: 0, resamples: 1000, alpha: 0.05, limit, threads: 2, qualityLines: 5 };
    const r = await runLocate({ ...common, variant: parseVariant(spec, undefined, 0), out: path.join(out, 'locate'), unit: 'layer-module', leaveOneOut: true });
    const [method, opts] = spec.split(':') as [string, string];
    const step = Object.fromEntries(opts.split(',').map((kv) => kv.split('=')).map(([k, v]) => [k!, Number(v)]));
    const recipeFile = path.join(out, 'L1.ffn.json');
    writeFileSync(recipeFile, JSON.stringify({ seed: 0, steps: [{ method, ...step, scope: { modules: ['ffn'], layers: [1] } }] }));
    const audit = await runAudit({ ...common, variants: [parseVariant(recipeFile, undefined, 0)], out: path.join(out, 'audit') });
    const a = audit.benchmarks[0]!.variants[0]!.overall;
    const u = unitOf(r, 'L1.ffn');
    assert.equal(u.delta, a.delta);
    assert.deepEqual(u.ci95, a.deltaCi95);
    assert.equal(u.p, a.p);
    assert.equal(u.quality_delta, audit.variants[0]!.quality!.value - audit.dense.quality!.value);
    // Holm across the 4 units: pHolm ≥ p, and the smallest p is multiplied by 4 (capped at 1).
    const units = r.benchmarks[0]!.units;
    const minP = Math.min(...units.map((x) => x.p!));
    assert.equal(units.find((x) => x.p === minP)!.pHolm, Math.min(1, 4 * minP));
    for (const x of units) assert.ok(x.pHolm! >= x.p!);
    // Leave-one-out of every unit together with the others is the full variant; the prediction is there.
    assert.ok(r.benchmarks[0]!.full !== null);
    for (const x of units) {
      assert.equal(typeof x.leave_one_out_delta, 'number');
      assert.equal(typeof x.predicted, 'number');
      assert.ok(x.cie_overlap!.shared <= Math.min(x.cie_overlap!.full, x.cie_overlap!.unit));
    }
    // Resumable: a second run computes nothing new and reports the same numbers.
    const store = openStore(storePath(path.join(out, 'locate')));
    const runs = store.listRuns().length;
    store.close();
    const again = await runLocate({ ...common, variant: parseVariant(spec, undefined, 0), out: path.join(out, 'locate'), unit: 'layer-module', leaveOneOut: true });
    const store2 = openStore(storePath(path.join(out, 'locate')));
    assert.equal(store2.listRuns().length, runs);
    assert.ok(store2.listRuns().every((x) => x.status === 'done'));
    store2.close();
    assert.deepEqual(again.benchmarks[0]!.units.map((x) => x.delta), units.map((x) => x.delta));
  });
}

test('dike locate: the command line writes locate.json and report.html; bad input is one line', () => {
  const out = scratchDir('locate-cli');
  const r = dike(['locate', '--model', TINY, '--variant', 'magnitude:sparsity=0.5', '--unit', 'matrix', '--limit', '20', '--quality-lines', '0', '--no-leave-one-out', '--threads', '2', '--out', out, '--json', '--quiet']);
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout) as LocateResults;
  assert.equal(j.unit, 'matrix');
  assert.equal(j.unit_models, 'narrowed-recipe');
  assert.equal(j.benchmarks[0]!.units.length, 12);
  assert.ok(j.benchmarks[0]!.units.every((u) => u.matrix !== undefined && u.delta !== null));
  assert.deepEqual(JSON.parse(readFileSync(path.join(out, 'locate.json'), 'utf8')), j);
  assert.match(readFileSync(path.join(out, 'report.html'), 'utf8'), /class="mark"/);
  // --predict-only: the prediction for every unit, no unit compressed and measured.
  const p = dike(['locate', '--model', TINY, '--variant', 'rtn:bits=4', '--limit', '20', '--quality-lines', '0', '--predict-only', '--threads', '2', '--out', path.join(out, 'p'), '--json', '--quiet']);
  assert.equal(p.code, 0, p.stderr);
  const pj = JSON.parse(p.stdout) as LocateResults;
  assert.equal(pj.benchmarks[0]!.units.length, 4);
  assert.ok(pj.benchmarks[0]!.units.every((u) => typeof u.predicted === 'number' && u.predicted !== 0 && u.delta === null));
  assert.equal(pj.benchmarks[0]!.full, null);
  assertOneLineError(dike(['locate', '--model', TINY, '--variant', 'magnitude:sparsity=0.5', '--unit', 'neuron', '--out', out]), '--unit');
  assertOneLineError(dike(['locate', '--model', TINY, '--variant', 'magnitude:sparsity=2', '--out', out]), 'sparsity');
  assertOneLineError(dike(['locate', '--model', TINY, '--variant', TINY, '--out', out]), 'recipe');
});

test('planted bias: locate ranks the planted unit first, measured and predicted (tiny GPT-2, 2 seeds)', async () => {
  const work = scratchDir('locate-planted');
  // Seed 1 plants in layer 0's attention, seed 4 in layer 1's FFN.
  const common = { model: modelDir('tiny-gpt2'), dataDir: DATA, work, limit: 150, sparsity: 0.5, fraction: 1, threads: 2 };
  const trials = [await plantedTrial({ ...common, seed: 1 }), await plantedTrial({ ...common, seed: 4 })];
  assert.deepEqual(trials.map((t) => t.unit), ['L0.attention', 'L1.ffn']);
  assert.notEqual(trials[0]!.unit, trials[1]!.unit);
  for (const t of trials) {
    assert.equal(t.rankMeasured, 1, `measured: ${JSON.stringify(t)}`);
    assert.equal(t.rankPredicted, 1, `predicted: ${JSON.stringify(t)}`);
    // Removing the plant lowers the stereotype rate: the planted unit's Δ is negative.
    assert.ok(t.plantedDelta < 0 && t.plantedPredicted < 0, JSON.stringify(t));
  }
});

test('dike locate resumes after kill -9: stored units are not recomputed, and locate.json equals an uninterrupted run\'s', async () => {
  const dir = scratchDir('locate-kill');
  const args = (out: string): string[] => ['locate', '--model', TINY, '--variant', 'magnitude:sparsity=0.5', '--unit', 'layer-module', '--limit', '40', '--quality-lines', '0', '--no-leave-one-out', '--threads', '1', '--out', out];
  const killed = path.join(dir, 'killed');
  // Start it as a child; on its third "unit …" line (dense, full variant and two units stored), kill -9.
  const child = spawn(process.execPath, [CLI, ...args(killed)], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, DIKE_DEBUG: '' } });
  let err = '';
  const exit = new Promise<NodeJS.Signals | number | null>((resolve) => child.on('exit', (code, signal) => resolve(signal ?? code)));
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    err += chunk;
    if ((err.match(/^unit /gm) ?? []).length >= 3 && child.exitCode === null) child.kill('SIGKILL');
  });
  assert.equal(await exit, 'SIGKILL', `the child was not killed: ${err}`);
  assert.ok(!existsSync(path.join(killed, 'locate.json')));
  const before = openStore(storePath(killed));
  const doneBefore = before.listRuns({ status: 'done' });
  before.close();
  assert.ok(doneBefore.length >= 4, `runs stored before the kill: ${doneBefore.length}`);
  // Rerun to the end: every run stored before the kill is kept as it was (same row, same finish time).
  const resumed = dike([...args(killed), '--json', '--quiet']);
  assert.equal(resumed.code, 0, resumed.stderr);
  const after = openStore(storePath(killed));
  const doneAfter = after.listRuns();
  after.close();
  assert.equal(doneAfter.length, 6); // dense, full variant, 4 units: one run each
  assert.ok(doneAfter.every((r) => r.status === 'done'));
  for (const r of doneBefore) assert.deepEqual(doneAfter.find((x) => x.id === r.id), { ...r, items: 40 });
  // The same numbers as a run that was never interrupted (the prediction's wall time aside).
  const clean = dike([...args(path.join(dir, 'clean')), '--json', '--quiet']);
  assert.equal(clean.code, 0, clean.stderr);
  const strip = (text: string): LocateResults => {
    const j = JSON.parse(text) as LocateResults;
    for (const b of j.benchmarks) if (b.objective) b.objective.seconds = 0;
    return j;
  };
  assert.deepEqual(strip(readFileSync(path.join(killed, 'locate.json'), 'utf8')), strip(clean.stdout));
});

test('dike audit --locate: the locate section joins the audit report, sharing the audit\'s store', () => {
  const out = scratchDir('audit-locate');
  const r = dike(['audit', '--model', TINY, '--variant', 'magnitude:sparsity=0.5', '--limit', '20', '--quality-lines', '0', '--threads', '2', '--locate', '--out', out, '--quiet']);
  assert.equal(r.code, 0, r.stderr);
  const html = readFileSync(path.join(out, 'report.html'), 'utf8');
  assert.match(html, /Where \(dike locate\)/);
  assert.match(html, /L1\.ffn/);
  assert.ok(existsSync(path.join(out, 'locate', 'magnitude-sparsity0.5', 'locate.json')));
  // The dense model's CrowS-Pairs run is stored once and reused by locate.
  const store = openStore(storePath(out));
  const dense = store.listRuns().filter((x) => x.benchmark === 'crows-pairs' && store.getModel(x.modelId)!.role === 'dense');
  store.close();
  assert.equal(dense.length, 1);
});

test('head units: the entries of a head (hand-listed for a fused GPT-2 c_attn and an output projection)', () => {
  const shape = { numHeads: 2, numKvHeads: 2, headDim: 2, hiddenSize: 4 };
  const qkv = { weight: 'qkv', layout: 'in-out' as const, inDim: 4, outDim: 12, layer: 0, module: 'attention' as const, role: 'qkv', seqGroup: 0 };
  const o = { weight: 'o', layout: 'out-in' as const, inDim: 4, outDim: 4, layer: 0, module: 'attention' as const, role: 'o', seqGroup: 1 };
  const e = headEntries([qkv, o], { head: 1 }, shape);
  // Head 1 owns output channels 2,3 (q), 6,7 (k), 10,11 (v); stored [in, out]: index = i·12 + channel.
  const expectQkv: number[] = [];
  for (let i = 0; i < 4; i++) for (const c of [2, 3, 6, 7, 10, 11]) expectQkv.push(i * 12 + c);
  assert.deepEqual([...e.get('qkv')!], expectQkv.sort((a, b) => a - b));
  // Output projection [out, in]: input columns 2, 3 of every row.
  assert.deepEqual([...e.get('o')!], [2, 3, 6, 7, 10, 11, 14, 15]);
  assert.throws(() => headEntries([o], { head: 0 }, { ...shape, numKvHeads: 3 }), /key\/value groups/);
});

test('head units with grouped-query attention: a query head is its Q rows and O columns, a KV group its K and V rows', () => {
  // 4 heads in 2 key/value groups, head dim 1, hidden 4; all matrices stored [out, in].
  const shape = { numHeads: 4, numKvHeads: 2, headDim: 1, hiddenSize: 4 };
  const lin = (weight: string, role: string, outDim: number) => ({ weight, layout: 'out-in' as const, inDim: 4, outDim, layer: 0, module: 'attention' as const, role, seqGroup: 0 });
  const attention = [lin('q', 'q', 4), lin('k', 'k', 2), lin('v', 'v', 2), lin('o', 'o', 4)];
  const head3 = headEntries(attention, { head: 3 }, shape);
  assert.deepEqual([...head3.keys()], ['q', 'o']);
  assert.deepEqual([...head3.get('q')!], [12, 13, 14, 15]); // row 3
  assert.deepEqual([...head3.get('o')!], [3, 7, 11, 15]); // column 3
  const kv1 = headEntries(attention, { kv: 1 }, shape);
  assert.deepEqual([...kv1.keys()], ['k', 'v']);
  assert.deepEqual([...kv1.get('k')!], [4, 5, 6, 7]); // row 1 of the [2, 4] key projection
  assert.deepEqual([...kv1.get('v')!], [4, 5, 6, 7]);
  // The 4 heads and 2 groups partition every attention matrix: each entry in exactly one unit.
  const parts = [0, 1, 2, 3].map((h) => headEntries(attention, { head: h }, shape)).concat([0, 1].map((g) => headEntries(attention, { kv: g }, shape)));
  for (const l of attention) {
    const all = parts.flatMap((m) => [...(m.get(l.weight) ?? [])]).sort((a, b) => a - b);
    assert.deepEqual(all, Array.from({ length: l.outDim * l.inDim }, (_, i) => i), l.weight);
  }
  // On tiny-llama (4 heads, 2 key/value groups, 2 layers): 2 × (4 heads + 2 groups) units.
  const ck = loadCheckpoint(modelDir('tiny-llama'));
  const recipe = parseRecipe(JSON.stringify({ steps: [{ method: 'rtn', bits: 4 }] }), 'r.json');
  const units = unitsOf(ck.family.linears(ck.config, ck.task), recipe, 'head', ck.shape);
  assert.deepEqual(units.filter((u) => u.layer === 0).map((u) => u.label), ['L0.head0', 'L0.head1', 'L0.head2', 'L0.head3', 'L0.kv0', 'L0.kv1']);
  assert.equal(units.length, ck.shape.numLayers * 6);
});

test('--variant none --unit head: removing a head equals zeroing its output-projection columns by hand', async () => {
  const out = scratchDir('locate-heads');
  const limit = 30;
  const r = await runLocate({ model: TINY, variant: { name: 'none', spec: 'none' }, benchmarks: ['crows-pairs'], dataDir: DATA, out, unit: 'head', seed: 0, resamples: 1000, alpha: 0.05, limit, threads: 2, qualityLines: 0 });
  const units = r.benchmarks[0]!.units;
  assert.equal(units.length, 8); // 2 layers × 4 heads
  assert.equal(r.unit_models, 'removed');
  const u = unitOf(r, 'L1.head2');
  assert.deepEqual(u.weights, ['bert.encoder.layer.1.attention.output.dense.weight']);
  const ck = loadCheckpoint(TINY);
  const w = 'bert.encoder.layer.1.attention.output.dense.weight';
  const p = ck.params.get(w)!;
  const data = p.data.slice();
  for (let row = 0; row < 64; row++) for (let col = 32; col < 48; col++) data[row * 64 + col] = 0; // head 2 of 4, head dim 16
  const params = new Map(ck.params);
  params.set(w, { ...p, data });
  const run = async (m: typeof ck) => {
    const runner = await ModelRunner.create(m, { threads: 2 });
    try {
      return await crowsPairs.run({ ckpt: m, runner, dataDir: DATA }, { scorer: 'nangia-pll', seed: 0, resamples: 1000, limit });
    } finally {
      await runner.dispose();
    }
  };
  const [d, v] = [await run(ck), await run({ ...ck, params })];
  const rate = (x: typeof d): number => (100 * x.items.reduce((s, i) => s + (i.outcome ?? 0), 0)) / x.items.length;
  const scoreDelta = v.items.reduce((s, i, k) => s + (i.score - d.items[k]!.score), 0) / limit;
  assert.equal(u.delta, rate(v) - rate(d));
  assert.equal(u.score_delta, scoreDelta);
  assert.equal(r.benchmarks[0]!.full, null);
  assert.ok(units.every((x) => typeof x.predicted === 'number' && x.leave_one_out_delta === null));
});

test('planted rank: ties never count as first', () => {
  assert.equal(pessimisticRank([-3, 1, 2], 0), 1);
  assert.equal(pessimisticRank([2, -2, 1], 0), 2);
  assert.equal(pessimisticRank([NaN, 1], 0), 2);
});
