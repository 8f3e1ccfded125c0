/**
 * The `dike` command line, run as a user runs it: reference scores through `dike logprobs`, model
 * facts through `dike inspect`, and one-line errors (no stack trace, non-zero exit) for bad input.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';

import { cpSync, mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { assertOneLineError, dike as dikeArgs, maxAbsDiff, modelDir, readGolden } from './fixtures.js';

const dike = (...args: string[]): ReturnType<typeof dikeArgs> => dikeArgs(args);

// "Within float32 rounding", as the README says (the same bounds as models.test.ts): measured worst over
// the five language models 1.9e-6 per token log-prob and 7.6e-6 per total (tiny-gpt2); JSON printing
// keeps every float32 digit. 2e-5 is 10× the per-token worst, 5e-5 6.5× the worst total.
const LOGPROB_TOL = 2e-5;
const TOTAL_TOL = 5e-5;
import { readSafetensors, writeSafetensors } from '../src/model/safetensors.js';

/** A scratch copy of a model directory (config, tokenizer and weights) to break on purpose. */
function scratchModel(name: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), `dike-${name}-`));
  cpSync(modelDir(name), dir, { recursive: true });
  return dir;
}

describe('dike logprobs reproduces the reference scores of every shared model', () => {
  for (const name of ['tiny-bert-mlm', 'tiny-gpt2', 'tiny-llama', 'small-bert-mlm', 'small-gpt2']) {
    it(name, () => {
      const { golden } = readGolden(name);
      const r = dike('logprobs', modelDir(name), '--json', ...golden.texts.flatMap((t) => ['--text', t.text]));
      assert.equal(r.code, 0, r.stderr);
      const out = JSON.parse(r.stdout) as { text: string; tokens: string[]; ids: number[]; logprobs: number[]; total: number }[];
      assert.equal(out.length, golden.texts.length);
      out.forEach((s, i) => {
        const g = golden.texts[i]!;
        assert.equal(s.text, g.text);
        assert.deepEqual(s.ids, g.ids);
        assert.deepEqual(s.tokens, g.tokens);
        assert.ok(maxAbsDiff(s.logprobs, g.logprobs ?? g.pll_logprobs!) <= LOGPROB_TOL, `text ${i}: max |Δ logprob| ${maxAbsDiff(s.logprobs, g.logprobs ?? g.pll_logprobs!)}`);
        assert.ok(Math.abs(s.total - (g.total ?? g.pll_total!)) <= TOTAL_TOL, `text ${i}: total ${s.total}`);
      });
    });
  }

  it('reads sentences from --file, keeps input order and line numbers', () => {
    const { golden } = readGolden('tiny-gpt2');
    const dir = mkdtempSync(path.join(tmpdir(), 'dike-file-'));
    const file = path.join(dir, 'sentences.txt');
    writeFileSync(file, `${golden.texts[3]!.text}\n\n${golden.texts[0]!.text}\n`);
    const r = dike('logprobs', modelDir('tiny-gpt2'), '--file', file, '--json');
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { line: number; total: number }[];
    assert.deepEqual(out.map((o) => o.line), [1, 3]);
    assert.ok(Math.abs(out[0]!.total - golden.texts[3]!.total!) <= TOTAL_TOL);
    assert.ok(Math.abs(out[1]!.total - golden.texts[0]!.total!) <= TOTAL_TOL);
    rmSync(dir, { recursive: true });
  });
});

describe('dike inspect', () => {
  it('reports architecture, parameters, bytes, dtype, layers and heads', () => {
    const r = dike('inspect', modelDir('tiny-llama'), '--json');
    assert.equal(r.code, 0, r.stderr);
    const d = JSON.parse(r.stdout);
    assert.equal(d.architecture, 'LlamaForCausalLM');
    assert.equal(d.shape.numLayers, 2);
    assert.equal(d.shape.numHeads, 4);
    assert.equal(d.shape.numKvHeads, 2);
    assert.deepEqual(d.dtypes, { BF16: 21 });
    assert.equal(d.weightFiles.length, 2);
    // total_size in the index is the sum of tensor bytes; BF16 is 2 bytes per parameter.
    const index = JSON.parse(readFileSync(path.join(modelDir('tiny-llama'), 'model.safetensors.index.json'), 'utf8'));
    assert.equal(d.bytesOnDisk, index.metadata.total_size);
    assert.equal(d.parameters * 2, index.metadata.total_size);
  });

  it('prints a readable summary', () => {
    const r = dike('inspect', modelDir('tiny-gpt2'));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /architecture\s+GPT2LMHeadModel/);
    assert.match(r.stdout, /dtype\s+F16/);
  });
});

describe('bad input gets one line naming the file and the problem', () => {
  it('missing model directory', () => {
    assertOneLineError(dike('inspect', '/nonexistent/model'), '/nonexistent/model', 'not found');
  });

  it('malformed config.json', () => {
    const dir = scratchModel('tiny-gpt2');
    writeFileSync(path.join(dir, 'config.json'), '{"architectures": ["GPT2LMHeadModel"], ');
    assertOneLineError(dike('inspect', dir), 'config.json', 'malformed JSON');
  });

  it('a config value of the wrong type', () => {
    const dir = scratchModel('tiny-gpt2');
    const cfg = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8'));
    cfg.n_head = 'four';
    writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg));
    assertOneLineError(dike('inspect', dir), 'config.json', '"n_head"', 'expected a number');
  });

  it('unsupported architecture', () => {
    const dir = scratchModel('tiny-gpt2');
    const cfg = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8'));
    cfg.architectures = ['T5ForConditionalGeneration'];
    writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg));
    assertOneLineError(dike('logprobs', dir, '--text', 'hi'), 'config.json', 'unsupported architecture T5ForConditionalGeneration');
  });

  it('malformed safetensors', () => {
    const dir = scratchModel('tiny-gpt2');
    const f = path.join(dir, 'model.safetensors');
    const bytes = readFileSync(f);
    writeFileSync(f, bytes.subarray(0, bytes.length - 10));
    assertOneLineError(dike('logprobs', dir, '--text', 'hi'), 'model.safetensors');
  });

  it('a tensor missing from the weights', () => {
    const dir = scratchModel('tiny-gpt2');
    const f = path.join(dir, 'model.safetensors');
    const st = readSafetensors(f);
    st.tensors.delete('transformer.h.1.mlp.c_fc.weight');
    writeSafetensors(f, st.tensors, st.metadata);
    assertOneLineError(dike('logprobs', dir, '--text', 'hi'), 'model.safetensors', 'transformer.h.1.mlp.c_fc.weight', 'missing');
  });

  it('a tensor whose shape disagrees with the config', () => {
    const dir = scratchModel('tiny-gpt2');
    const cfg = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8'));
    cfg.n_inner = 128;
    writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg));
    assertOneLineError(dike('logprobs', dir, '--text', 'hi'), 'model.safetensors', 'c_fc', 'does not match the config');
  });

  it('a pickle checkpoint is refused, not loaded', () => {
    const dir = scratchModel('tiny-gpt2');
    rmSync(path.join(dir, 'model.safetensors'));
    writeFileSync(path.join(dir, 'pytorch_model.bin'), 'not really a pickle');
    assertOneLineError(dike('inspect', dir), 'pytorch_model.bin', 'never loaded', 'safe_serialization=True');
  });

  it('a shard listed in the index but missing', () => {
    const dir = scratchModel('tiny-llama');
    rmSync(path.join(dir, 'model-00002-of-00002.safetensors'));
    assertOneLineError(dike('inspect', dir), 'model.safetensors.index.json', 'missing');
  });

  it('a text longer than the model\'s positions', () => {
    const long = Array.from({ length: 300 }, () => 'word').join(' ');
    assertOneLineError(dike('logprobs', modelDir('tiny-gpt2'), '--text', long), 'text 1', 'exceed');
  });

  it('a missing sentences file', () => {
    assertOneLineError(dike('logprobs', modelDir('tiny-gpt2'), '--file', '/nonexistent/s.txt'), '/nonexistent/s.txt', 'not found');
  });

  it('a classifier asked for text log-probabilities', () => {
    assertOneLineError(dike('logprobs', modelDir('tiny-bert-cls'), '--text', 'hi'), 'config.json', 'classifier');
  });
});
