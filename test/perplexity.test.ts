/**
 * Held-out (pseudo-)perplexity on the first 200 lines of lm_corpus/valid.txt reproduces the values
 * in ../shared/models/<model>/TRAINING.md (independent PyTorch implementation).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { loadCheckpoint } from '../src/model/checkpoint.js';
import { ModelRunner } from '../src/runtime/session.js';
import { heldOutPerplexity } from '../src/score/perplexity.js';
import { DATA, modelDir } from './fixtures.js';

const lines = readFileSync(path.join(DATA, 'lm_corpus', 'valid.txt'), 'utf8').split('\n').filter((l) => l !== '').slice(0, 200);

describe('held-out perplexity', () => {
  it('small-gpt2: perplexity 358.076 over 48378 tokens (TRAINING.md)', async () => {
    const ckpt = loadCheckpoint(modelDir('small-gpt2'));
    const runner = await ModelRunner.create(ckpt, { threads: 2 });
    const p = await heldOutPerplexity(ckpt, runner, lines);
    await runner.dispose();
    assert.equal(p.tokens, 48378);
    assert.equal(p.kind, 'perplexity');
    assert.ok(Math.abs(p.value - 358.076) < 0.01, String(p.value));
  });

  it('small-bert-mlm: pseudo-perplexity 759.642 over 48312 tokens (TRAINING.md)', async () => {
    const ckpt = loadCheckpoint(modelDir('small-bert-mlm'));
    const runner = await ModelRunner.create(ckpt, { threads: 2 });
    const p = await heldOutPerplexity(ckpt, runner, lines);
    await runner.dispose();
    assert.equal(p.tokens, 48312);
    assert.equal(p.kind, 'pseudo-perplexity');
    assert.ok(Math.abs(p.value - 759.642) < 0.01, String(p.value));
  });
});
