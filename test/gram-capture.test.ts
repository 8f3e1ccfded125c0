/**
 * The Gram capture computes only the upper staircase of XᵀX (model/graph/capture.ts, blocks of
 * GRAM_BLOCK columns) and mirrors the rest: the statistics must be the very numbers of the full
 * product XᵀX (gramBlock: Infinity, the capture as it was before), bit for bit — every entry is
 * the same dot product over the same tokens — for body and head matrices, both weight layouts
 * (BERT's [out, in] Gemm, GPT-2's [in, out] MatMul), a block that does not divide the input
 * (1024 = 7·128 + 128, 256, 4·… ), and the paired statistics of Fair-GPTQ.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { DATA, loadModelCached as load } from './fixtures.js';
import type { LinearInfo } from '../src/model/arch/types.js';
import { calibrationFromSequences, inputStats, sampleCalibration, type InputStats } from '../src/compress/calibrate.js';
import ort from 'onnxruntime-node';
import { keepOutputs, withLinearInputGrams } from '../src/model/graph/capture.js';
import { graphToOnnx } from '../src/model/graph/to-onnx.js';
import { buildBodyGraph, ortSessionOptions, padBatch } from '../src/runtime/session.js';

const CORPUS = path.join(DATA, 'lm_corpus', 'train.txt');

function firstDifference(a: Float64Array, b: Float64Array): string | undefined {
  if (a.length !== b.length) return `lengths ${a.length} and ${b.length}`;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return `entry ${i}: ${a[i]} vs ${b[i]}`;
  return undefined;
}

function assertSame(full: Map<string, InputStats>, blocked: Map<string, InputStats>, pairs: boolean): void {
  assert.deepEqual([...blocked.keys()].sort(), [...full.keys()].sort());
  for (const [w, f] of full) {
    const b = blocked.get(w)!;
    assert.equal(b.dim, f.dim, w);
    assert.equal(b.tokens, f.tokens, w);
    assert.equal(firstDifference(f.gram, b.gram), undefined, `${w}: Gram`);
    if (pairs) {
      assert.ok(f.pairGram !== undefined && b.pairGram !== undefined, w);
      assert.equal(b.pairs, f.pairs, w);
      assert.equal(b.pairTokens, f.pairTokens, w);
      assert.equal(firstDifference(f.pairGram, b.pairGram), undefined, `${w}: pair Gram`);
    }
  }
}

describe('Gram capture by upper blocks equals the full XᵀX bit for bit', () => {
  for (const [name, block] of [
    ['small-bert-mlm', 128],
    ['small-gpt2', 128],
    ['tiny-llama', 128],
  ] as const) {
    it(`${name}, blocks of ${block} columns, body and head matrices`, async () => {
      const ckpt = load(name);
      const targets = ckpt.family.linears(ckpt.config, ckpt.task) as LinearInfo[];
      assert.ok(targets.some((t) => t.inDim > block), 'some input is cut into blocks');
      const calib = sampleCalibration(ckpt, { file: CORPUS, samples: 20, seqLen: 48, seed: 3 });
      const full = await inputStats(ckpt, ckpt.params, targets, calib, { threads: 1, gramBlock: Infinity });
      const blocked = await inputStats(ckpt, ckpt.params, targets, calib, { threads: 1, gramBlock: block });
      assertSame(full, blocked, false);
      // The numbers are a Gram matrix: symmetric, non-negative diagonal, and q/k/v keep separate copies.
      for (const s of blocked.values()) {
        for (let i = 0; i < s.dim; i++) {
          assert.ok(s.gram[i * s.dim + i]! >= 0);
          for (let j = 0; j < i; j++) assert.equal(s.gram[i * s.dim + j], s.gram[j * s.dim + i]);
        }
      }
      const grams = [...blocked.values()].map((s) => s.gram);
      assert.equal(new Set(grams).size, grams.length, 'every matrix owns its Gram array');
    });
  }

  it('paired statistics (Fair-GPTQ) of small-bert-mlm, 2 threads, with pads', async () => {
    const ckpt = load('small-bert-mlm');
    const targets = (ckpt.family.linears(ckpt.config, ckpt.task) as LinearInfo[]).filter((t) => t.layer >= 0);
    const base = sampleCalibration(ckpt, { file: CORPUS, samples: 16, seqLen: 40, seed: 9 });
    // Unequal lengths, so that the pair mask and the pad mask both matter.
    const seqs = base.sequences.map((s, i) => s.slice(0, 40 - ((i * 7) % 13)));
    const calib = calibrationFromSequences(seqs, 'test pairs', { paired: true, rows: 8 });
    const full = await inputStats(ckpt, ckpt.params, targets, calib, { threads: 2, pairs: true, gramBlock: Infinity });
    const blocked = await inputStats(ckpt, ckpt.params, targets, calib, { threads: 2, pairs: true, gramBlock: 128 });
    assertSame(full, blocked, true);
  });
});

describe('keepOutputs: a pass builds only what its fetches need', () => {
  it('the Grams of block 1 of small-bert-mlm, from the pruned graph, equal the full graph bit for bit', async () => {
    const ckpt = load('small-bert-mlm');
    const targets = (ckpt.family.linears(ckpt.config, ckpt.task) as LinearInfo[]).filter((t) => t.layer === 1);
    const first = targets.filter((t) => t.seqGroup === Math.min(...targets.map((u) => u.seqGroup)));
    const calib = sampleCalibration(ckpt, { file: CORPUS, samples: 6, seqLen: 24, seed: 1 });
    const batch = padBatch(calib.sequences.map((s, i) => s.slice(0, 24 - i)), 0);
    const feeds = {
      input_ids: new ort.Tensor('int64', batch.inputIds, [batch.batch, batch.seq]),
      attention_mask: new ort.Tensor('int64', batch.attentionMask, [batch.batch, batch.seq]),
    };
    for (const group of [first, targets]) {
      const cap = withLinearInputGrams(buildBodyGraph(ckpt), group.map((t) => t.weight), 'attention_mask', undefined, { block: 128 });
      const fetches = [...new Set(cap.grams.values())].flatMap((g) => g.blocks.map((b) => b.name));
      const pruned = keepOutputs(cap.graph, fetches);
      assert.deepEqual(pruned.outputs.map((o) => o.name).sort(), [...fetches].sort());
      assert.ok(pruned.nodes.length < cap.graph.nodes.length, 'nodes after the last Gram are dropped');
      assert.ok(!pruned.initializers.has('bert.encoder.layer.2.output.dense.weight'), 'later blocks\' weights are dropped');
      const run = async (g: typeof pruned): Promise<Record<string, ort.Tensor>> => {
        const s = await ort.InferenceSession.create(graphToOnnx(g), ortSessionOptions(1));
        try {
          return await s.run(feeds, fetches);
        } finally {
          await s.release();
        }
      };
      const [a, b] = [await run(cap.graph), await run(pruned)];
      for (const f of fetches) {
        const x = a[f]!.data as Float32Array;
        const y = b[f]!.data as Float32Array;
        assert.equal(y.length, x.length, f);
        assert.ok(x.every((v, i) => Object.is(v, y[i])), `${f}: same numbers`);
      }
    }
  });
});
