/**
 * Each class of bad input the mutation campaign found, as the user meets it: one line on stderr naming
 * the file, the place and the problem, a non-zero exit, nothing written, and no hang.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { assertOneLineError, DATA, dike, loadModelCached, modelDir, repoRoot, scratchDir } from './fixtures.js';
import { DikeError } from '../src/errors.js';
import { ModelRunner, padBatch } from '../src/runtime/session.js';

const tmp = scratchDir('bad-input');
let counter = 0;

/** A copy of a shared model (links) with some files replaced. */
function damaged(model: string, files: Record<string, string | Uint8Array>): string {
  const dir = path.join(tmp, `${model}-${counter++}`);
  mkdirSync(dir);
  for (const f of readdirSync(modelDir(model))) if (!(f in files)) symlinkSync(path.join(modelDir(model), f), path.join(dir, f));
  for (const [f, c] of Object.entries(files)) writeFileSync(path.join(dir, f), c);
  return dir;
}

function configWith(model: string, edits: Record<string, unknown>): string {
  const c = JSON.parse(readFileSync(path.join(modelDir(model), 'config.json'), 'utf8')) as Record<string, unknown>;
  return JSON.stringify({ ...c, ...edits });
}

/** model.safetensors with one value of `tensor` replaced by NaN / Inf (F16 or F32 storage). */
function weightsWith(model: string, tensor: string, value: 'nan' | 'inf'): Uint8Array {
  const bytes = new Uint8Array(readFileSync(path.join(modelDir(model), 'model.safetensors')));
  const dv = new DataView(bytes.buffer);
  const n = Number(dv.getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))) as Record<string, { dtype: string; data_offsets: [number, number] }>;
  const e = header[tensor]!;
  const at = 8 + n + e.data_offsets[0] + 16;
  if (e.dtype === 'F32') dv.setFloat32(at, value === 'nan' ? NaN : Infinity, true);
  else dv.setUint16(at, value === 'nan' ? 0x7e00 : 0x7c00, true);
  return bytes;
}

const out = (name: string): string => path.join(tmp, name);
const TEXT = path.join(DATA, 'lm_corpus', 'valid.txt');

describe('hangs become refusals', () => {
  it('a tokenizer id far beyond any vocabulary is refused at load, naming the file and token', () => {
    const vocab = JSON.parse(readFileSync(path.join(modelDir('tiny-gpt2'), 'vocab.json'), 'utf8')) as Record<string, number>;
    const dir = damaged('tiny-gpt2', { 'vocab.json': JSON.stringify({ ...vocab, zzfar: 1_000_000_000 }) });
    const t0 = Date.now();
    assertOneLineError(dike(['logprobs', dir, '--text', 'zzfar']), 'vocab.json', '"zzfar"', 'beyond any vocabulary');
    assert.ok(Date.now() - t0 < 60_000);
  });

  it('--samples 1000000000 (compress) and --calibration-samples (audit) are refused before any work', () => {
    assertOneLineError(dike(['compress', modelDir('tiny-bert-mlm'), '--method', 'gptq', '--calibration', TEXT, '--samples', '1000000000', '--out', out('c-samples')]), '--samples', '65536');
    assertOneLineError(dike(['audit', '--model', modelDir('tiny-bert-mlm'), '--sweep', 'gptq:4', '--calibration-samples', '1000000000', '--out', out('a-samples')]), '--calibration-samples', '65536');
    const recipe = out('samples.yaml');
    writeFileSync(recipe, `calibration: { file: ${TEXT}, samples: 1000000000, seq_len: 32 }\nsteps:\n  - method: gptq\n    bits: 4\n`);
    assertOneLineError(dike(['compress', modelDir('tiny-bert-mlm'), '--recipe', recipe, '--out', out('c-samples2')]), 'samples.yaml', '"calibration.samples"', '65536');
    assert.ok(!existsSync(out('c-samples')) && !existsSync(out('a-samples')) && !existsSync(out('c-samples2')));
  });
});

describe('internal errors become lines naming the file', () => {
  it('a tokenizer larger than the embedding (ids ≥ vocab_size) is refused before ONNX Runtime', () => {
    const vocab = readFileSync(path.join(modelDir('tiny-bert-mlm'), 'vocab.txt'), 'utf8').trimEnd();
    const dir = damaged('tiny-bert-mlm', { 'vocab.txt': `${vocab}\nzzextra1\nzzextra2\n` });
    assertOneLineError(dike(['logprobs', dir, '--text', 'zzextra1']), 'vocab.txt', 'zzextra2', 'vocab_size 30522');
    assertOneLineError(dike(['inspect', dir]), 'vocab.txt', 'vocab_size');
  });

  it('the library refuses ids beyond the vocabulary before ONNX Runtime sees them', async () => {
    const ckpt = loadModelCached('tiny-gpt2');
    const runner = await ModelRunner.create(ckpt, { threads: 1 });
    try {
      await assert.rejects(runner.hidden(padBatch([[1, 2, ckpt.shape.vocabSize + 3]], 0)), (e: unknown) => e instanceof DikeError && /position 2/.test(e.place) && /outside the vocabulary/.test(e.problem));
      await assert.rejects(runner.hidden(padBatch([[-4]], 0)), DikeError);
    } finally {
      await runner.dispose();
    }
  });

  it('a fractional bos_token_id is refused naming config.json and the key', () => {
    const dir = damaged('tiny-gpt2', { 'config.json': configWith('tiny-gpt2', { bos_token_id: 0.5 }) });
    assertOneLineError(dike(['logprobs', dir, '--text', 'hi']), 'config.json', '"bos_token_id"', '0.5');
  });
});

describe('silent wrong results become refusals', () => {
  it('NaN or Inf weights are refused at load, naming the tensor (inspect and logprobs alike)', () => {
    const nan = damaged('tiny-gpt2', { 'model.safetensors': weightsWith('tiny-gpt2', 'transformer.h.1.mlp.c_fc.weight', 'nan') });
    assertOneLineError(dike(['logprobs', nan, '--text', 'hi']), 'model.safetensors', 'transformer.h.1.mlp.c_fc.weight', 'NaN');
    assertOneLineError(dike(['inspect', nan]), 'transformer.h.1.mlp.c_fc.weight', 'NaN');
    const inf = damaged('tiny-bert-mlm', { 'model.safetensors': weightsWith('tiny-bert-mlm', 'bert.encoder.layer.0.output.dense.weight', 'inf') });
    assertOneLineError(dike(['measure', inf, '--limit', '5']), 'bert.encoder.layer.0.output.dense.weight', 'Inf');
  });

  it('a non-positive layer_norm_eps is refused', () => {
    const dir = damaged('tiny-bert-mlm', { 'config.json': configWith('tiny-bert-mlm', { layer_norm_eps: -1e-12 }) });
    assertOneLineError(dike(['inspect', dir]), 'config.json', '"layer_norm_eps"', 'positive');
  });

  it('a CrowS-Pairs CSV with only a header is refused (no NaN score)', () => {
    const data = out('header-only');
    mkdirSync(path.join(data, 'crows-pairs'), { recursive: true });
    const header = readFileSync(path.join(repoRoot(), 'data', 'crows-pairs', 'crows_pairs_anonymized.csv'), 'utf8').split('\n')[0]!;
    writeFileSync(path.join(data, 'crows-pairs', 'crows_pairs_anonymized.csv'), header + '\n');
    assertOneLineError(dike(['measure', modelDir('tiny-bert-mlm'), '--data', data, '--quiet']), 'crows_pairs_anonymized.csv', 'only a header');
  });

  it('--layers naming a block the model lacks is refused (flags and recipes)', () => {
    assertOneLineError(dike(['compress', modelDir('tiny-bert-mlm'), '--method', 'magnitude', '--sparsity', '0.5', '--layers', '0,9', '--out', out('c-layers')]), 'dike compress: --layers', 'layer 9 does not exist');
    const recipe = out('layers.yaml');
    writeFileSync(recipe, 'steps:\n  - method: magnitude\n    sparsity: 0.5\n    scope: { layers: [0, 9] }\n');
    assertOneLineError(dike(['compress', modelDir('tiny-bert-mlm'), '--recipe', recipe, '--out', out('c-layers2')]), 'layers.yaml', 'step 1 "scope.layers"', 'layer 9');
    assert.ok(!existsSync(out('c-layers')) && !existsSync(out('c-layers2')));
  });

  it('--seed x, --samples without calibration, and a --freeze pattern matching nothing are refused', () => {
    assertOneLineError(dike(['measure', modelDir('tiny-bert-mlm'), '--seed', 'x']), 'dike measure: --seed', '"x"');
    assertOneLineError(dike(['compress', modelDir('tiny-bert-mlm'), '--method', 'magnitude', '--sparsity', '0.5', '--samples', '8', '--out', out('c-orphan')]), '--samples', 'uses no calibration text');
    assertOneLineError(dike(['train', '--model', modelDir('tiny-bert-mlm'), '--data', TEXT, '--out', out('t-freeze'), '--freeze', 'no.such.prefix', '--steps', '1', '--quiet']), '--freeze', '"no.such.prefix"', 'matches no parameter');
    assert.ok(!existsSync(out('t-freeze')));
  });

  it('dike data list --data /nonexistent fails', () => {
    assertOneLineError(dike(['data', 'list', '--data', '/nonexistent/dike-data']), '/nonexistent/dike-data', 'not found');
  });

  it('inspect refuses what logprobs refuses: a weight whose shape the config contradicts', () => {
    const dir = damaged('tiny-gpt2', { 'config.json': configWith('tiny-gpt2', { n_inner: 128 }) });
    assertOneLineError(dike(['inspect', dir]), 'model.safetensors', 'c_fc', 'does not match the config');
    assertOneLineError(dike(['logprobs', dir, '--text', 'hi']), 'model.safetensors', 'c_fc', 'does not match the config');
  });
});

describe('messages', () => {
  it('recipe errors name the recipe file and the step', () => {
    const recipe = out('heads.yaml');
    writeFileSync(recipe, 'steps:\n  - method: heads\n    count: 99\n');
    assertOneLineError(dike(['compress', modelDir('tiny-bert-mlm'), '--recipe', recipe, '--out', out('c-heads')]), 'heads.yaml', 'step 1', '99 heads');
  });

  it('usage errors are one line naming the command and the flag', () => {
    assertOneLineError(dike(['logprobs', modelDir('tiny-gpt2')]), 'dike logprobs:', '--text', 'dike logprobs --help');
    assertOneLineError(dike(['export', modelDir('tiny-gpt2')]), 'dike export: --out: is required');
    assertOneLineError(dike(['measure', '--bogus']), 'dike measure: --bogus: unknown option');
    assertOneLineError(dike(['nosuchcommand']), 'unknown command "nosuchcommand"');
  });

  it('audit validates every option before it prints anything', () => {
    const r = dike(['audit', '--sweep', 'magnitude:0.5', '--out', out('a-alpha'), '--alpha', '2']);
    assertOneLineError(r, 'dike audit: --alpha', '"2"');
    assert.equal(r.stdout, '');
    assert.ok(!existsSync(out('a-alpha')));
  });

  it('every command documents its flags in --help, from the same table that parses them', () => {
    for (const cmd of ['inspect', 'logprobs', 'measure', 'data', 'compress', 'export', 'audit', 'train', 'distill']) {
      const r = dike([cmd, '--help']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`^usage: dike ${cmd}`));
    }
    assert.match(dike(['compress', '--help']).stdout, /--samples N +calibration sequences .*an integer from 1 to 65536/);
  });
});
