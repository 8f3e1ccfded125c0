/**
 * Sequential calibration (src/compress/calibrate.ts walkCalibration), checked independently of the
 * block-by-block machinery that computes it: the statistics a sequential step used for a matrix of
 * block l, group g must be the one-shot statistics (one pass of the whole body graph) of the model
 * whose blocks < l — and, at group granularity, groups < g of block l — are the compressed ones and
 * the rest dense. The error each method reports is measured on exactly those statistics, so
 * recomputing it from the rebuilt model's Grams checks the walk order, the hidden states carried
 * between blocks and the Grams of each pass.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { readFileSync, writeFileSync } from 'node:fs';
import { DATA, loadModelCached as load, scratchDir } from './fixtures.js';
import { DikeError } from '../src/errors.js';
import type { Param } from '../src/model/checkpoint.js';
import type { LinearInfo } from '../src/model/arch/types.js';
import { applyRecipe, parseRecipe, writeCompressed } from '../src/compress/recipe.js';
import { inputStats, sampleCalibration } from '../src/compress/calibrate.js';
import { reconstructionError } from '../src/compress/linalg.js';

const CORPUS = path.join(DATA, 'lm_corpus', 'train.txt');
const CAL = { samples: 8, seq_len: 32 };

function outIn(data: Float32Array, t: LinearInfo): Float32Array {
  if (t.layout === 'out-in') return data;
  const m = new Float32Array(t.outDim * t.inDim);
  for (let i = 0; i < t.inDim; i++) for (let o = 0; o < t.outDim; o++) m[o * t.inDim + i] = data[i * t.outDim + o]!;
  return m;
}

const cases: [string, Record<string, unknown>, string, 'group' | 'block'][] = [
  ['tiny-gpt2', { method: 'gptq', bits: 3, group_size: 32 }, 'error', 'group'],
  ['tiny-llama', { method: 'gptq', bits: 3, group_size: 16 }, 'error', 'group'],
  ['tiny-bert-mlm', { method: 'sparsegpt', sparsity: 0.5 }, 'reconstruction_error', 'block'],
  ['tiny-llama', { method: 'sparsegpt', sparsity: 0.5 }, 'reconstruction_error', 'block'],
];

describe('sequential calibration: each matrix is compressed on the inputs of the model compressed up to it', () => {
  for (const [name, step, key, granularity] of cases) {
    it(`${name} ${step['method']} (${granularity} by ${granularity})`, async (tc) => {
      const ckpt = load(name);
      const recipe = parseRecipe(JSON.stringify({ seed: 5, calibration: { file: CORPUS, ...CAL }, steps: [step] }), 'test.json');
      const res = await applyRecipe(ckpt, recipe, { threads: 1 });
      const calib = sampleCalibration(ckpt, { file: CORPUS, samples: CAL.samples, seqLen: CAL.seq_len, seed: 5 });
      const all = ckpt.family.linears(ckpt.config, ckpt.task).filter((l: LinearInfo) => l.module !== 'head');
      const reports = new Map(res.reports[0]!.map((r) => [r.weight, r]));
      let differsFromDense = 0;
      let worst = 0;
      const denseAll = await inputStats(ckpt, ckpt.params, all, calib, { threads: 1 });
      for (const t of all) {
        // The model as the walk saw it when it reached t: compressed before t, dense from t on.
        const before = (u: LinearInfo): boolean => u.layer < t.layer || (granularity === 'group' && u.layer === t.layer && u.seqGroup < t.seqGroup);
        const params = new Map<string, Param>(ckpt.params);
        for (const u of all) if (before(u)) params.set(u.weight, res.params.get(u.weight)!);
        const s = (await inputStats(ckpt, params, [t], calib, { threads: 1 })).get(t.weight)!;
        const dense = denseAll.get(t.weight)!;
        if (t.layer > 0 && dense.gram.some((v, i) => Math.abs(v - s.gram[i]!) > 1e-3 * Math.abs(v))) differsFromDense++;
        const W = outIn(ckpt.params.get(t.weight)!.data, t);
        const Q = outIn(res.params.get(t.weight)!.data, t);
        const measured = reconstructionError(W, Q, s.gram, t.outDim, t.inDim);
        const reported = reports.get(t.weight)!.detail![key] as number;
        worst = Math.max(worst, Math.abs(reported - measured) / measured);
        // GPTQ's error is exact bookkeeping on the Gram (worst measured 1.6e-14 relative); SparseGPT's
        // comes from its OBS bookkeeping in float64 (worst measured 7.9e-8, tiny-bert-mlm).
        assert.ok(Math.abs(reported - measured) <= 1e-6 * measured + 1e-9, `${t.weight}: reported ${reported}, measured on the sequential inputs ${measured}`);
        assert.equal(reports.get(t.weight)!.detail!['calibration'], 'sequential');
      }
      tc.diagnostic(`worst relative difference reported vs measured: ${worst.toExponential(2)}`);
      assert.ok(differsFromDense > 0, 'sequential statistics never differed from the dense ones');
    });
  }
});

describe('explicit token calibration and the record', () => {
  it('a JSON list of id lists, batched as given with pads kept; compression.json records the mode per step', async () => {
    const dir = scratchDir('token-cal');
    writeFileSync(path.join(dir, 'ids.json'), JSON.stringify([[464, 19780, 2137], [464, 19780], [13, 14, 15, 16], [17]]));
    const recipe = parseRecipe(
      JSON.stringify({
        seed: 0,
        calibration: { tokens: 'ids.json', batch_size: 2, keep_pads: true, pad_id: 50256 },
        steps: [
          { method: 'wanda', sparsity: 0.3, calibration: 'one-shot' },
          { method: 'gptq', bits: 4, group_size: 32 },
        ],
      }),
      path.join(dir, 'recipe.json'),
    );
    const ckpt = load('tiny-llama');
    const res = await applyRecipe(ckpt, recipe, { threads: 1 });
    // Pads kept: every position of every batch counts (2 batches of 2 rows × 3 and × 4 positions).
    assert.equal(res.reports[1]![0]!.detail!['calibration_tokens'], 2 * 3 + 2 * 4);
    writeCompressed(ckpt, res, recipe, path.join(dir, 'out'));
    const cj = JSON.parse(readFileSync(path.join(dir, 'out', 'compression.json'), 'utf8'));
    assert.deepEqual(cj.steps.map((s: { calibration: string }) => s.calibration), ['one-shot', 'sequential']);
    assert.equal(cj.calibration.keep_pads, true);
    assert.equal(cj.calibration.batch_size, 2);
    assert.equal(cj.calibration.tokens, 'ids.json');
    assert.equal(cj.recipe.calibration.tokens, 'ids.json');
  });

  it('bad token calibration is a one-line error naming the file and the place', async () => {
    const dir = scratchDir('token-cal-bad');
    const bad: [unknown, RegExp][] = [
      [{ tokens: 'ids.json', batch_size: 0 }, /"calibration.batch_size"/],
      [{ tokens: 'ids.json', keep_pads: 'yes' }, /"calibration.keep_pads"/],
      [{ tokens: 'ids.json', samples: 3 }, /"calibration.samples".*unknown key/],
    ];
    for (const [cal, re] of bad) {
      assert.throws(() => parseRecipe(JSON.stringify({ calibration: cal, steps: [{ method: 'gptq', bits: 4 }] }), path.join(dir, 'r.json')), (e: unknown) => e instanceof DikeError && re.test(e.message) && !e.message.includes('\n'));
    }
    writeFileSync(path.join(dir, 'ids.json'), JSON.stringify([[1, 2], [3, -1]]));
    const r = parseRecipe(JSON.stringify({ calibration: { tokens: 'ids.json' }, steps: [{ method: 'gptq', bits: 4 }] }), path.join(dir, 'r.json'));
    await assert.rejects(applyRecipe(load('tiny-llama'), r), (e: unknown) => e instanceof DikeError && /ids\.json: sequence 2: expected a list of non-negative integer token ids/.test(e.message));
    assert.throws(
      () => parseRecipe(JSON.stringify({ calibration: { tokens: 'ids.json' }, steps: [{ method: 'sparsegpt', sparsity: 0.5, calibration: 'twice' }] }), path.join(dir, 'r.json')),
      (e: unknown) => e instanceof DikeError && /"calibration": expected one of sequential, one-shot/.test(e.message),
    );
  });
});
