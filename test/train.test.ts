/**
 * `dike train` and `dike distill` as a user runs them: tiny models, a few KB of the shared corpus, a
 * few dozen steps. What is pinned: the written Hugging Face directory and training.json, that loss
 * falls, exact resume (in-process and after killing the CLI), the refusals of a foreign checkpoint and
 * of a finished run, causal-LM and classification runs, --keep-sparsity, --freeze, distillation (layer
 * subset, hidden-state MSE, a student from a config) whose student loads and measures like any model,
 * and one-line errors for bad input.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, copyFileSync, existsSync, openSync, readFileSync, readSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { CLI, DATA, dike as dikeArgs, assertOneLineError, loadModelCached, modelDir, scratchDir, type CliRun } from './fixtures.js';
import { loadCheckpoint, type Checkpoint } from '../src/model/checkpoint.js';
import { ModelRunner, padBatch } from '../src/runtime/session.js';
import { train, type TrainSettings } from '../src/train/loop.js';

const WORK = scratchDir('train');

type Run = CliRun;
const dike = (...args: string[]): Run => dikeArgs(args);

/** The first whole lines of the shared training corpus (about `bytes` bytes) in a scratch file. */
function corpusSample(bytes: number): string {
  const fd = openSync(path.join(DATA, 'lm_corpus', 'train.txt'), 'r');
  const buf = Buffer.alloc(bytes);
  const n = readSync(fd, buf, 0, bytes, 0);
  closeSync(fd);
  const text = buf.subarray(0, n).toString('utf8');
  const file = path.join(WORK, 'data.txt');
  writeFileSync(file, text.slice(0, text.lastIndexOf('\n') + 1));
  return file;
}

const TEXT = corpusSample(6000);
const sha256 = (file: string): string => createHash('sha256').update(readFileSync(file)).digest('hex');
const mean = (xs: readonly number[]): number => xs.reduce((s, x) => s + x, 0) / xs.length;
const out = (tag: string): string => path.join(WORK, tag);

interface TrainingJson {
  architecture: string;
  steps: number;
  tokens_seen: number;
  resumed_from_step: number;
  losses_every_step: number[];
  settings: { data: { file: string; sha256: string }[]; seq: number; batch: number };
  held_out: { kind: string; value: number; lines: number; ci95?: [number, number] } | null;
  teacher?: { dir: string };
}
const trainingJson = (dir: string): TrainingJson => JSON.parse(readFileSync(path.join(dir, 'training.json'), 'utf8')) as TrainingJson;

/** Small, fast settings shared by the CLI runs (one thread: the tests must not crowd the machine). */
const FAST = ['--batch', '4', '--seq', '32', '--warmup', '2', '--threads', '1', '--quiet'];

/** Final-layer hidden states and logits at [CLS]/the first token: both finite and of the right size. */
async function assertRuns(ckpt: Checkpoint, text: string): Promise<void> {
  const runner = await ModelRunner.create(ckpt, { threads: 1 });
  try {
    const ids = ckpt.tokenizer.encode(text).ids;
    const [h] = await runner.hidden(padBatch([ids], ckpt.tokenizer.special.pad ?? 0));
    assert.equal(h!.length, ids.length * ckpt.shape.hiddenSize);
    assert.ok(h!.every(Number.isFinite), 'hidden states finite');
    const logits = await runner.logits(h!.subarray(0, ckpt.shape.hiddenSize), 1);
    assert.equal(logits.length, ckpt.shape.outputSize);
    assert.ok(logits.every(Number.isFinite), 'logits finite');
  } finally {
    await runner.dispose();
  }
}

/** Parameters whose values differ anywhere between two checkpoints (same names). */
function changedParams(a: Checkpoint, b: Checkpoint): Set<string> {
  const changed = new Set<string>();
  for (const [name, p] of a.params) {
    const q = b.params.get(name);
    assert.ok(q !== undefined, `${name} present in both`);
    if (p.data.some((x, i) => x !== q.data[i])) changed.add(name);
  }
  return changed;
}

describe('dike train: masked-LM fine-tuning writes a loadable model and a training record', () => {
  const dir = out('mlm');

  it('30 steps of tiny-bert-mlm: summary line, HF directory, training.json, no checkpoint left, loss falls, output runs', async () => {
    const r = dike('train', '--model', modelDir('tiny-bert-mlm'), '--data', TEXT, '--out', dir, '--steps', '30', '--lr', '5e-3', ...FAST);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^wrote .+: 30 steps, final loss \d+\.\d{4}\n$/);
    for (const f of ['config.json', 'vocab.txt', 'tokenizer_config.json', 'special_tokens_map.json', 'model.safetensors', 'training.json']) {
      assert.ok(existsSync(path.join(dir, f)), `${f} written`);
    }
    assert.ok(!existsSync(path.join(dir, 'checkpoint')), 'the checkpoint directory is removed after a finished run');
    assert.deepEqual(readFileSync(path.join(dir, 'vocab.txt')), readFileSync(path.join(modelDir('tiny-bert-mlm'), 'vocab.txt')));
    const t = trainingJson(dir);
    assert.equal(t.architecture, 'BertForMaskedLM');
    assert.equal(t.steps, 30);
    assert.equal(t.tokens_seen, 30 * 4 * 32);
    assert.equal(t.resumed_from_step, 0);
    assert.equal(t.losses_every_step.length, 30);
    assert.ok(t.losses_every_step.every(Number.isFinite));
    assert.deepEqual(t.settings.data, [{ file: 'data.txt', sha256: sha256(TEXT) }]);
    assert.equal(t.held_out, null);
    // Repeated data at a high learning rate: it must learn.
    const first = mean(t.losses_every_step.slice(0, 5));
    const last = mean(t.losses_every_step.slice(-5));
    assert.ok(last < first - 0.5, `mean loss of the last 5 steps ${last} < first 5 ${first}`);
    const trained = loadCheckpoint(dir);
    assert.equal(trained.hfClass, 'BertForMaskedLM');
    const changed = changedParams(loadModelCached('tiny-bert-mlm'), trained);
    assert.ok(changed.size > trained.params.size / 2, `${changed.size} of ${trained.params.size} parameters changed`);
    await assertRuns(trained, 'the capital of france is paris.');
  });

  it('an --out that holds a finished run (training.json) is refused', () => {
    assert.ok(existsSync(path.join(dir, 'training.json')), 'needs the run of the previous test');
    const before = readFileSync(path.join(dir, 'model.safetensors'));
    const r = dike('train', '--model', modelDir('tiny-bert-mlm'), '--data', TEXT, '--out', dir, '--steps', '30', '--lr', '5e-3', ...FAST);
    assertOneLineError(r, dir, 'finished training run', 'training.json');
    assert.deepEqual(readFileSync(path.join(dir, 'model.safetensors')), before, 'the finished model is untouched');
  });
});

describe('resume is exact', () => {
  const settings: TrainSettings = {
    objective: 'masked-lm',
    data: [TEXT],
    seq: 32,
    batch: 4,
    steps: 12,
    schedule: { peak: 5e-3, warmup: 2, decay: 'cosine', minRatio: 0.1 },
    adamw: { beta1: 0.9, beta2: 0.98, eps: 1e-6, weightDecay: 0.01, maxGradNorm: 1 },
    seed: 3,
    mlmProbability: 0.15,
    checkpointEvery: 0,
    freeze: [],
    keepSparsity: false,
    dtype: 'F32',
    threads: 1,
  };
  const tokenizerDir = modelDir('tiny-bert-mlm');

  it('stopped after 5 steps, again after 7, resumed from a state.json one checkpoint behind: byte-identical to the uninterrupted run', async () => {
    const model = loadModelCached('tiny-bert-mlm');
    const a = out('resume-a');
    const b = out('resume-b');
    const full = await train(model, settings, a, { tokenizerDir });
    assert.equal(full.losses.length, 12);

    const first = await train(model, settings, b, { tokenizerDir, stopAfter: 5 });
    assert.equal(first.steps, 5);
    assert.ok(existsSync(path.join(b, 'checkpoint', 'state.json')), 'checkpoint written before stopping');
    assert.ok(!existsSync(path.join(b, 'model.safetensors')) && !existsSync(path.join(b, 'training.json')), 'nothing final written yet');
    const stale = path.join(WORK, 'state-at-5.json');
    copyFileSync(path.join(b, 'checkpoint', 'state.json'), stale);

    const second = await train(model, settings, b, { tokenizerDir, stopAfter: 2 });
    assert.equal(second.resumedFrom, 5);
    assert.equal(second.steps, 7);
    // A kill between the two renames of a checkpoint leaves state.json at the previous checkpoint.
    copyFileSync(stale, path.join(b, 'checkpoint', 'state.json'));

    const last = await train(model, settings, b, { tokenizerDir });
    assert.equal(last.resumedFrom, 7, 'the step recorded with the tensors wins over a stale state.json');
    assert.deepEqual(last.losses, full.losses);
    assert.ok(readFileSync(path.join(a, 'model.safetensors')).equals(readFileSync(path.join(b, 'model.safetensors'))), 'model.safetensors byte-identical');
    assert.deepEqual(trainingJson(b).losses_every_step, trainingJson(a).losses_every_step);
    assert.equal(trainingJson(b).resumed_from_step, 7);
  });

  it('the CLI killed after a checkpoint: a changed setting is refused, the same command resumes to the uninterrupted result', async () => {
    const args = (o: string, lr = '5e-3'): string[] =>
      ['train', '--model', tokenizerDir, '--data', TEXT, '--out', o, '--steps', '40', '--lr', lr, '--seed', '1', '--checkpoint-every', '2', ...FAST];
    const ref = out('cli-ref');
    assert.equal(dike(...args(ref)).code, 0);

    const dir = out('cli-killed');
    const child = spawn(process.execPath, [CLI, ...args(dir)], { stdio: 'ignore' });
    const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
    const state = path.join(dir, 'checkpoint', 'state.json');
    let done = false;
    void exited.then(() => (done = true));
    while (!done && !existsSync(state)) await new Promise((r) => setTimeout(r, 5));
    child.kill('SIGKILL');
    await exited;
    assert.ok(existsSync(state) && !existsSync(path.join(dir, 'training.json')), 'killed after a checkpoint, before the end');

    assertOneLineError(dike(...args(dir, '1e-3')), dir, 'checkpoint of a different run');

    const r = dike(...args(dir).filter((a) => a !== '--quiet'));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /resuming from the checkpoint at step \d+/);
    assert.ok(trainingJson(dir).resumed_from_step > 0);
    assert.deepEqual(trainingJson(dir).losses_every_step, trainingJson(ref).losses_every_step);
    assert.ok(readFileSync(path.join(ref, 'model.safetensors')).equals(readFileSync(path.join(dir, 'model.safetensors'))), 'model.safetensors byte-identical');
  });
});

describe('other objectives', () => {
  it('causal LM: tiny-gpt2 trains a few steps and the output loads and runs', async () => {
    const dir = out('gpt2');
    const r = dike('train', '--model', modelDir('tiny-gpt2'), '--data', TEXT, '--out', dir, '--steps', '6', '--lr', '3e-3', ...FAST);
    assert.equal(r.code, 0, r.stderr);
    const t = trainingJson(dir);
    assert.equal(t.architecture, 'GPT2LMHeadModel');
    assert.equal(t.losses_every_step.length, 6);
    assert.ok(t.losses_every_step.every(Number.isFinite));
    for (const f of ['vocab.json', 'merges.txt']) assert.ok(existsSync(path.join(dir, f)), `${f} written`);
    await assertRuns(loadCheckpoint(dir), 'The quick brown fox');
  });

  // A learnable toy task: the adjective decides the label; held-out rows use nouns never trained on.
  const ADJECTIVES: Record<string, string[]> = {
    negative: ['terrible', 'awful', 'horrible', 'bad', 'dreadful'],
    neutral: ['okay', 'average', 'ordinary', 'fine', 'plain'],
    positive: ['wonderful', 'great', 'excellent', 'lovely', 'superb'],
  };
  const rows = (nouns: string[]): { label: string; text: string }[] =>
    nouns.flatMap((n) => Object.entries(ADJECTIVES).flatMap(([label, adjs]) => adjs.map((a) => ({ label, text: `the ${n} was ${a}` }))));

  it('sequence classification: tiny-bert-cls on JSON lines, held-out accuracy (TSV) in training.json', async () => {
    const trainFile = path.join(WORK, 'labels.jsonl');
    const validFile = path.join(WORK, 'labels-valid.tsv');
    writeFileSync(trainFile, rows(['movie', 'meal', 'trip', 'book']).map((x) => JSON.stringify(x)).join('\n') + '\n');
    writeFileSync(validFile, rows(['song', 'game']).map((x) => `${x.label}\t${x.text}`).join('\n') + '\n');
    const dir = out('cls');
    const r = dike('train', '--model', modelDir('tiny-bert-cls'), '--data', trainFile, '--valid', validFile, '--out', dir,
      '--steps', '40', '--batch', '8', '--seq', '16', '--lr', '3e-3', '--warmup', '2', '--threads', '1', '--quiet');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /held-out accuracy \d\.\d{3}/);
    const t = trainingJson(dir);
    assert.equal(t.architecture, 'BertForSequenceClassification');
    assert.equal(t.held_out?.kind, 'accuracy');
    assert.equal(t.held_out?.lines, 30);
    assert.ok(t.held_out!.value >= 0.8, `held-out accuracy ${t.held_out!.value}`);
    const [lo, hi] = t.held_out!.ci95!;
    assert.ok(lo <= t.held_out!.value && t.held_out!.value <= hi, 'the accuracy lies in its 95% interval');
    const trained = loadCheckpoint(dir);
    assert.equal(trained.task, 'sequence-classification');
    await assertRuns(trained, 'the film was great');
  });

  it('a bad label row is a one-line error naming the file and the line', () => {
    const bad = path.join(WORK, 'bad-labels.tsv');
    writeFileSync(bad, 'positive\tthe meal was great\nnegative\tthe trip was awful\nangry\tthe book was bad\n');
    const r = dike('train', '--model', modelDir('tiny-bert-cls'), '--data', bad, '--out', out('cls-bad'), '--steps', '2', ...FAST);
    assertOneLineError(r, bad, 'line 3', '"angry"', 'negative');
  });
});

describe('constraints while training', () => {
  it('--keep-sparsity: every zero of a 50% magnitude-pruned tiny-bert-mlm stays exactly 0, the other weights move', () => {
    const pruned = out('pruned');
    const c = dike('compress', modelDir('tiny-bert-mlm'), '--method', 'magnitude', '--sparsity', '0.5', '--modules', 'attention,ffn', '--out', pruned);
    assert.equal(c.code, 0, c.stderr);
    const dir = out('sparse');
    const r = dike('train', '--model', pruned, '--data', TEXT, '--out', dir, '--steps', '5', '--lr', '5e-3', '--keep-sparsity', ...FAST);
    assert.equal(r.code, 0, r.stderr);
    const before = loadCheckpoint(pruned);
    const after = loadCheckpoint(dir);
    let matrices = 0;
    for (const [name, p] of before.params) {
      const zeros = p.data.reduce((n, x) => n + (x === 0 ? 1 : 0), 0);
      if (zeros < p.data.length * 0.4) continue;
      matrices++;
      const q = after.params.get(name)!.data;
      let moved = 0;
      for (let i = 0; i < p.data.length; i++) {
        if (p.data[i] === 0) assert.equal(q[i], 0, `${name}[${i}] was pruned`);
        else if (q[i] !== p.data[i]) moved++;
      }
      const kept = p.data.length - zeros;
      assert.ok(moved > 0.9 * kept, `${name}: ${moved} of ${kept} non-zero weights changed`);
    }
    assert.equal(matrices, 12, 'the 12 attention and FFN matrices of 2 layers were pruned');
  });

  it('--freeze bert.embeddings: the embeddings are identical after training, every other parameter changed', () => {
    const dir = out('frozen');
    const r = dike('train', '--model', modelDir('tiny-bert-mlm'), '--data', TEXT, '--out', dir, '--steps', '3', '--lr', '5e-3', '--freeze', 'bert.embeddings', ...FAST);
    assert.equal(r.code, 0, r.stderr);
    const before = loadModelCached('tiny-bert-mlm');
    const changed = changedParams(before, loadCheckpoint(dir));
    const embeddings = [...before.params.keys()].filter((k) => k.startsWith('bert.embeddings.'));
    assert.ok(embeddings.length >= 4, 'word, position, token-type embeddings and their LayerNorm');
    for (const k of before.params.keys()) {
      if (k.startsWith('bert.embeddings.')) assert.ok(!changed.has(k), `${k} frozen`);
      else assert.ok(changed.has(k), `${k} trained`);
    }
  });
});

describe('dike distill', () => {
  const teacher = modelDir('small-bert-mlm');
  const DISTILL = ['--data', TEXT, '--steps', '6', ...FAST];

  it('a student of teacher layers 0,2 completes, loads, measures and audits like any model', async () => {
    const dir = out('student');
    const r = dike('distill', teacher, '--student', '0,2', '--out', dir, ...DISTILL);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /student with 2 of the teacher's 4 layers, 6 steps, final loss \d+\.\d{4}/);
    const config = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(config['num_hidden_layers'], 2);
    assert.equal(config['hidden_size'], 256);
    const t = trainingJson(dir);
    assert.ok(t.losses_every_step.length === 6 && t.losses_every_step.every(Number.isFinite));
    assert.ok(t.teacher !== undefined, 'training.json names the teacher');
    const student = loadCheckpoint(dir);
    assert.equal(student.shape.numLayers, 2);
    await assertRuns(student, 'the nurse said that she was tired.');
    // CrowS-Pairs on 20 items, as for any masked LM.
    const m = dike('measure', dir, '--benchmark', 'crows-pairs', '--data', DATA, '--limit', '20', '--threads', '1', '--json', '--quiet');
    assert.equal(m.code, 0, m.stderr);
    const report = JSON.parse(m.stdout) as { results: { benchmark: string; scorer: string; score: number; n: number }[] };
    assert.equal(report.results[0]!.benchmark, 'crows-pairs');
    assert.equal(report.results[0]!.n, 20);
    assert.ok(report.results[0]!.score >= 0 && report.results[0]!.score <= 100);
    // … and audits like any model: dense student vs its own pruned variant, paired item by item.
    const auditDir = out('student-audit');
    const a = dike('audit', '--model', dir, '--sweep', 'magnitude:0.5', '--benchmark', 'crows-pairs', '--data', DATA, '--limit', '20', '--quality-lines', '0', '--threads', '1', '--out', auditDir, '--quiet');
    assert.equal(a.code, 0, a.stderr);
    const audit = JSON.parse(readFileSync(path.join(auditDir, 'results.json'), 'utf8')) as { benchmarks: { benchmark: string; variants: { overall: { delta: number } }[] }[] };
    assert.equal(audit.benchmarks[0]!.benchmark, 'crows-pairs');
    assert.ok(Number.isFinite(audit.benchmarks[0]!.variants[0]!.overall.delta));
  });

  it('--hidden-mse 1 with a layer-subset student gives finite losses', () => {
    const dir = out('student-mse');
    const r = dike('distill', teacher, '--student', '1,3', '--hidden-mse', '1', '--out', dir, ...DISTILL);
    assert.equal(r.code, 0, r.stderr);
    const t = trainingJson(dir);
    assert.ok(t.losses_every_step.length === 6 && t.losses_every_step.every(Number.isFinite));
  });

  it('a from-scratch student config (hidden 32, same vocabulary) trains; --hidden-mse with it is a usage error', async () => {
    const config = JSON.parse(readFileSync(path.join(modelDir('tiny-bert-mlm'), 'config.json'), 'utf8')) as Record<string, unknown>;
    const file = path.join(WORK, 'student-config.json');
    writeFileSync(file, JSON.stringify({ ...config, hidden_size: 32, intermediate_size: 64, num_attention_heads: 4 }));
    const dir = out('student-scratch');
    const r = dike('distill', teacher, '--student', file, '--out', dir, ...DISTILL);
    assert.equal(r.code, 0, r.stderr);
    const t = trainingJson(dir);
    assert.ok(t.losses_every_step.length === 6 && t.losses_every_step.every(Number.isFinite));
    const student = loadCheckpoint(dir);
    assert.equal(student.shape.hiddenSize, 32);
    assert.equal(student.shape.numLayers, 2);
    await assertRuns(student, 'a small student');

    const refused = dike('distill', teacher, '--student', file, '--hidden-mse', '1', '--out', out('student-scratch-mse'), ...DISTILL);
    assertOneLineError(refused, '--hidden-mse', 'same hidden size');
    assert.equal(refused.code, 2, 'usage error');
  });
});

describe('bad input gets one line, a non-zero exit and no stack trace', () => {
  it('a missing --data file is named, and nothing is written', () => {
    const missing = path.join(WORK, 'no-such-corpus.txt');
    const dir = out('missing-data');
    assertOneLineError(dike('train', '--model', modelDir('tiny-bert-mlm'), '--data', missing, '--out', dir, '--steps', '2', ...FAST), missing, 'cannot read');
    assert.ok(!existsSync(dir), 'no output directory for a run that never started');
  });

  it('a missing --valid file is refused before training', () => {
    const missing = path.join(WORK, 'no-such-valid.txt');
    assertOneLineError(dike('train', '--model', modelDir('tiny-bert-mlm'), '--data', TEXT, '--valid', missing, '--out', out('missing-valid'), '--steps', '2', ...FAST), missing, 'cannot read');
  });

  it('--student layer out of range', () => {
    assertOneLineError(dike('distill', modelDir('small-bert-mlm'), '--student', '0,7', '--data', TEXT, '--out', out('bad-student'), ...FAST), '--student', 'layer 7', '0..3');
  });

  it('an unknown --decay value', () => {
    const r = dike('train', '--model', modelDir('tiny-bert-mlm'), '--data', TEXT, '--out', out('bad-decay'), '--decay', 'step', ...FAST);
    assertOneLineError(r, '--decay', '"step"');
    assert.equal(r.code, 2, 'usage error');
  });

  it('a --config with an unsupported architecture', () => {
    const config = JSON.parse(readFileSync(path.join(modelDir('tiny-bert-mlm'), 'config.json'), 'utf8')) as Record<string, unknown>;
    const file = path.join(WORK, 't5-config.json');
    writeFileSync(file, JSON.stringify({ ...config, architectures: ['T5ForConditionalGeneration'] }));
    const r = dike('train', '--config', file, '--tokenizer', modelDir('tiny-bert-mlm'), '--data', TEXT, '--out', out('bad-arch'), ...FAST);
    assertOneLineError(r, file, 'unsupported architecture T5ForConditionalGeneration');
  });
});

describe('freezing by module', () => {
  it('embeddings, attention, ffn, head, norms and layer.N select the parameters of that part in every family', async () => {
    const { frozenSelector } = await import('../src/train/loop.js');
    const { loadModelCached } = await import('./fixtures.js');
    const frozen = (model: string, item: string): string[] => {
      const m = loadModelCached(model);
      const trainable = frozenSelector(m, [item]);
      return [...m.params.keys()].filter((k) => !trainable(k)).sort();
    };
    // Every pattern on every family, as a count and a rule written from the parameter names by hand
    // (tiny-bert-mlm: 2 layers, 42 tensors; tiny-gpt2: 2 layers, 28 tensors, head tied to wte; tiny-llama:
    // 2 layers, 21 tensors). `every` over an empty list is true, so each count is asserted first.
    const expect = (model: string, item: string, count: number, rule: RegExp): void => {
      const f = frozen(model, item);
      assert.equal(f.length, count, `${model} --freeze ${item}: ${f.join(', ')}`);
      const all = [...loadModelCached(model).params.keys()];
      assert.deepEqual(f, all.filter((k) => rule.test(k)).sort(), `${model} --freeze ${item}`);
    };
    expect('tiny-bert-mlm', 'embeddings', 3, /^bert\.embeddings\.(word|position|token_type)_embeddings\.weight$/);
    expect('tiny-bert-mlm', 'attention', 2 * 4 * 2, /attention\.(self\.(query|key|value)|output\.dense)\./);
    expect('tiny-bert-mlm', 'ffn', 2 * 2 * 2, /\.(intermediate\.dense|\d\.output\.dense)\./);
    expect('tiny-bert-mlm', 'head', 5, /^cls\./);
    expect('tiny-bert-mlm', 'norms', 2 + 2 * 2 * 2 + 2, /LayerNorm/);
    expect('tiny-bert-mlm', 'layer.1', 16, /^bert\.encoder\.layer\.1\./);
    expect('tiny-gpt2', 'embeddings', 2, /^transformer\.(wte|wpe)\.weight$/);
    expect('tiny-gpt2', 'attention', 2 * 4, /\.attn\.c_(attn|proj)\./);
    expect('tiny-gpt2', 'ffn', 2 * 4, /\.mlp\.c_(fc|proj)\./);
    expect('tiny-gpt2', 'norms', 2 * 4 + 2, /\.ln_(1|2|f)\./);
    expect('tiny-gpt2', 'layer.0', 12, /^transformer\.h\.0\./);
    expect('tiny-gpt2', 'transformer.wpe', 1, /^transformer\.wpe\.weight$/);
    expect('tiny-llama', 'embeddings', 1, /^model\.embed_tokens\.weight$/);
    expect('tiny-llama', 'attention', 2 * 4, /self_attn\.(q|k|v|o)_proj\.weight$/);
    expect('tiny-llama', 'ffn', 2 * 3, /mlp\.(gate|up|down)_proj\.weight$/);
    expect('tiny-llama', 'head', 1, /^lm_head\.weight$/);
    expect('tiny-llama', 'norms', 2 * 2 + 1, /layernorm|^model\.norm\./);
    expect('tiny-llama', 'layer.1', 9, /^model\.layers\.1\./);
    // A pattern that selects nothing is an error, not a silent no-op: GPT-2's head is tied to wte
    // (nothing of its own to freeze), a 2-layer model has no layer.5, and a misspelt prefix.
    const m = loadModelCached('tiny-gpt2');
    for (const item of ['head', 'layer.5', 'transformer.wpe.weigth']) {
      assert.throws(() => frozenSelector(m, [item]), new RegExp(`--freeze: "${item.replace(/\./g, '\\.')}" matches no parameter`));
    }
  });
});

describe('held-out accuracy interval', () => {
  it('is the 95% Wilson score interval (8 of 10: 0.4902–0.9433 by hand; 0 of 10: 0–0.2775, an example of Newcombe 1998)', async () => {
    const { wilsonInterval } = await import('../src/train/loop.js');
    const [lo, hi] = wilsonInterval(8, 10);
    assert.ok(Math.abs(lo - 0.4902) < 5e-5 && Math.abs(hi - 0.9433) < 5e-5, `${lo} ${hi}`);
    const [lo0, hi0] = wilsonInterval(0, 10);
    assert.equal(lo0, 0);
    assert.ok(Math.abs(hi0 - 0.2775) < 5e-5, String(hi0));
  });
});
