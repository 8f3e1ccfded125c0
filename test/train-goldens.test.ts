/**
 * Whole-model gradients and a 20-step AdamW loss curve against the reference PyTorch implementation
 * (../shared/models/<model>/grads.* and train_curve.json; tolerances from that folder's README).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { readSafetensors, toFloat32 } from '../src/model/safetensors.js';
import { TrainSession, lossRowsFromLabels, type StepBatch } from '../src/train/session.js';
import { loadModelCached, modelDir } from './fixtures.js';

interface LabelledBatch {
  input_ids: number[][];
  attention_mask: number[][];
  labels: number[][];
}

function stepBatch(x: LabelledBatch, kind: 'masked-lm' | 'causal-lm', rows: number): StepBatch {
  const B = x.input_ids.length;
  const S = x.input_ids[0]!.length;
  return {
    batch: B,
    seq: S,
    inputIds: BigInt64Array.from(x.input_ids.flat(), BigInt),
    attentionMask: BigInt64Array.from(x.attention_mask.flat(), BigInt),
    ...lossRowsFromLabels(x.labels, kind, rows),
  };
}

describe('training step: whole-model gradients equal grads.safetensors', () => {
  for (const name of ['tiny-bert-mlm', 'tiny-gpt2', 'tiny-llama']) {
    it(`${name}: loss, every gradient (vocabulary matrices at the stored rows) and the global norm`, async () => {
      const model = loadModelCached(name);
      const ref = JSON.parse(readFileSync(path.join(modelDir(name), 'grads.json'), 'utf8')) as LabelledBatch & {
        loss: number; grad_norm_total_full: number; row_subset: Record<string, number[]>;
      };
      const kind = model.task === 'masked-lm' ? 'masked-lm' : 'causal-lm';
      const B = ref.input_ids.length;
      const S = ref.input_ids[0]!.length;
      const session = await TrainSession.create(model, { batch: B, seq: S, rows: B * S, optimizer: 'grads' }, 2);
      const r = await session.gradients(stepBatch(ref, kind, B * S));
      await session.release();
      assert.ok(Math.abs(r.loss - ref.loss) <= 1e-4, `loss ${r.loss} vs ${ref.loss}`);
      const stored = readSafetensors(path.join(modelDir(name), 'grads.safetensors'));
      assert.deepEqual([...r.grads.keys()].sort(), [...stored.tensors.keys()].sort(), 'one gradient per parameter, named as the parameter');
      let sumSquares = 0;
      for (const [param, t] of stored.tensors) {
        const want = toFloat32(t);
        const got = r.grads.get(param)!;
        for (const x of got) sumSquares += x * x;
        const rows = ref.row_subset[param];
        const width = t.shape[t.shape.length - 1]!;
        const at = (i: number): number => (rows === undefined ? got[i]! : got[rows[Math.floor(i / width)]! * width + (i % width)]!);
        for (let i = 0; i < want.length; i++) {
          const tol = Math.max(1e-4, 1e-3 * Math.abs(want[i]!));
          if (Math.abs(at(i) - want[i]!) > tol) assert.fail(`${param}[${i}]: ${at(i)} vs ${want[i]}`);
        }
      }
      // The reference norm is a float64 sum over every row; Dikē sums in float64 in-graph too.
      assert.ok(Math.abs(Math.sqrt(sumSquares) - ref.grad_norm_total_full) <= 1e-5 * ref.grad_norm_total_full);
      assert.ok(Math.abs(r.gradNorm - ref.grad_norm_total_full) <= 1e-6 * ref.grad_norm_total_full, `norm ${r.gradNorm}`);
    });
  }
});

describe('training step: AdamW with clipping and warmup follows train_curve.json', () => {
  for (const name of ['tiny-bert-mlm', 'tiny-gpt2']) {
    it(`${name}: 20 updates, loss before each update within 1e-4 growing to 1e-3`, async () => {
      const model = loadModelCached(name);
      const curve = JSON.parse(readFileSync(path.join(modelDir(name), 'train_curve.json'), 'utf8')) as {
        batches: LabelledBatch[]; losses: number[]; lrs: number[]; grad_norms_before_clip: number[];
        betas: [number, number]; eps: number; weight_decay: number;
      };
      const kind = model.task === 'masked-lm' ? 'masked-lm' : 'causal-lm';
      const B = curve.batches[0]!.input_ids.length;
      const S = Math.max(...curve.batches.map((x) => x.input_ids[0]!.length));
      assert.ok(curve.batches.every((x) => x.input_ids.every((r) => r.length === S)), 'every batch has the same padded length');
      // Sanity of the stated schedule: lr_t = 1e-3 · min(1, t/5).
      curve.lrs.forEach((lr, k) => assert.ok(Math.abs(lr - 1e-3 * Math.min(1, (k + 1) / 5)) < 1e-12));
      const session = await TrainSession.create(
        model,
        { batch: B, seq: S, rows: B * S, optimizer: { beta1: curve.betas[0], beta2: curve.betas[1], eps: curve.eps, weightDecay: curve.weight_decay, maxGradNorm: 1.0 } },
        2,
      );
      for (let k = 0; k < curve.batches.length; k++) {
        const r = await session.update(stepBatch(curve.batches[k]!, kind, B * S), curve.lrs[k]!);
        const tol = 1e-4 + ((1e-3 - 1e-4) * k) / (curve.batches.length - 1);
        assert.ok(Math.abs(r.loss - curve.losses[k]!) <= tol, `step ${k + 1}: loss ${r.loss} vs ${curve.losses[k]} (tol ${tol})`);
        // The reference norm is torch's float32 clip_grad_norm_; Dikē sums squares in float64 (and equals
        // grads.json's float64 norm to 1e-6 above). Measured at step 1, where the parameters are identical:
        // a float32 accumulation of Dikē's own gradients reproduces the reference value (tiny-gpt2 2.313400)
        // while the float64 sum is 7.8e-5 higher; the gap stays below 4e-4 over the 20 steps.
        const refNorm = curve.grad_norms_before_clip[k]!;
        assert.ok(Math.abs(r.gradNorm - refNorm) <= 5e-4 * refNorm, `step ${k + 1}: |g| ${r.gradNorm} vs ${refNorm}`);
      }
      assert.equal(session.step, 20);
      await session.release();
    });
  }
});

describe('training step: embedding gradients with repeated token ids', () => {
  it('are deterministic and independent of loss-row padding on a 32 × 64 batch (ORT ScatterND races on repeated indices)', async () => {
    const { packSequences, makeBatch, maskedRowCapacity } = await import('../src/train/corpus.js');
    const { DATA } = await import('./fixtures.js');
    // Hidden size 256: large enough for ONNX Runtime to split the scatter across threads.
    const model = loadModelCached('small-bert-mlm');
    const B = 32;
    const S = 64;
    const R = maskedRowCapacity(B, S, 0.15);
    const lines = readFileSync(path.join(DATA, 'lm_corpus', 'valid.txt'), 'utf8').split('\n').filter((l) => l !== '').slice(0, 400);
    const seqs = packSequences(lines, model.tokenizer, { objective: 'masked-lm', seq: S, seed: 0, maxSequences: B });
    const batch = makeBatch(seqs, { objective: 'masked-lm', batch: B, seq: S, rows: R, seed: 0, mlmProbability: 0.15, vocabSize: model.tokenizer.vocabSize, maskId: 103, specialIds: model.tokenizer.specialIds }, 0);
    const runs: Map<string, Float32Array>[] = [];
    for (const rows of [R, undefined, undefined]) {
      const session = await TrainSession.create(model, { batch: B, seq: S, rows: R, optimizer: 'grads' }, 2);
      if (rows !== undefined) session.rowsFor = () => rows; // every padding row of weight 0 kept
      runs.push((await session.gradients(batch)).grads);
      await session.release();
    }
    for (const [name, g] of runs[0]!) {
      for (const other of runs.slice(1)) {
        const h = other.get(name)!;
        let worst = 0;
        for (let i = 0; i < g.length; i++) worst = Math.max(worst, Math.abs(g[i]! - h[i]!));
        assert.ok(worst <= 1e-6, `${name}: runs differ by ${worst}`);
      }
    }
  });
});
