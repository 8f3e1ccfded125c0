/**
 * Dikē's embedded defaults: its own small models and the CrowS-Pairs CSV ship in the repository, so
 * the README's main command runs offline with no model or data argument; the recorded recipes
 * reproduce the shipped models' training.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { loadCheckpoint } from '../src/model/checkpoint.js';
import { EMBEDDED_MODELS, embeddedModelDir, embeddedDataDir } from '../src/embedded.js';
import { sha256File } from '../src/util/hash.js';
import { findBenchmark } from '../src/measure/registry.js';
import { STEREOSET_DATASET, STEREOSET_LOCAL_ALTERNATIVE } from '../src/measure/stereoset.js';
import { initFromConfig } from '../src/train/init.js';
import { train, type TrainSettings } from '../src/train/loop.js';
import { DATA, repoRoot, scratchDir, dike, type CliRun } from './fixtures.js';

/** Run the CLI as on a fresh machine: no DIKE_DATA. */
function dikeOffline(...args: string[]): CliRun {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env['DIKE_DATA'];
  return dike(args, { env, cwd: scratchDir('offline') });
}

interface TrainingRecord {
  settings: { objective: string; seq: number; batch: number; steps: number; seed: number; data: { file: string; sha256: string }[] };
  steps: number;
  losses_every_step: number[];
  held_out: { kind: string; value: number; tokens: number; lines: number };
}

describe('embedded default models', () => {
  for (const name of EMBEDDED_MODELS) {
    it(`${name} ships as float16 safetensors with config, tokenizer, training record and model card`, () => {
      const dir = embeddedModelDir(name);
      const ckpt = loadCheckpoint(dir);
      assert.ok([...ckpt.params.values()].every((p) => p.dtype === 'F16'));
      assert.ok(statSync(path.join(dir, 'model.safetensors')).size < 20_000_000, 'each model stays under 20 MB');
      assert.ok(existsSync(path.join(dir, 'TRAINING.md')));
      const rec = JSON.parse(readFileSync(path.join(dir, 'training.json'), 'utf8')) as TrainingRecord;
      assert.equal(rec.steps, rec.settings.steps);
      assert.equal(rec.losses_every_step.length, rec.steps);
      assert.equal(rec.held_out.lines, 200);
      assert.ok(Number.isFinite(rec.held_out.value) && rec.held_out.value > 1);
      // Trained on lm_corpus/train.txt, the public-domain corpus (not a non-commercial one).
      assert.deepEqual(rec.settings.data.map((d) => d.file), ['train.txt']);
      assert.equal(rec.settings.data[0]!.sha256, sha256File(path.join(DATA, 'lm_corpus', 'train.txt')));
      const first = rec.losses_every_step.slice(0, 20).reduce((s, x) => s + x, 0) / 20;
      const last = rec.losses_every_step.slice(-20).reduce((s, x) => s + x, 0) / 20;
      assert.ok(last < first - 2, `training lowered the loss (${first.toFixed(3)} → ${last.toFixed(3)})`);
    });

    it(`${name}: the recorded recipe reproduces the first training steps`, async () => {
      const recipeFile = path.join(repoRoot(), 'models', 'recipes', `${name}.json`);
      const recipe = JSON.parse(readFileSync(recipeFile, 'utf8')) as Record<string, number | string>;
      const rec = JSON.parse(readFileSync(path.join(embeddedModelDir(name), 'training.json'), 'utf8')) as TrainingRecord & { settings: TrainSettings };
      const model = initFromConfig(path.join(repoRoot(), 'models', 'recipes', String(recipe['config'])), embeddedModelDir(name), Number(recipe['seed']));
      const steps = 3;
      // Within warmup the learning rate does not depend on the total number of steps, so 3 steps of the
      // recipe see the same batches, masks and rates as the first 3 of the recorded run.
      assert.ok(rec.settings.schedule.warmup >= steps);
      const settings: TrainSettings = { ...rec.settings, data: [path.join(DATA, 'lm_corpus', 'train.txt')], steps, checkpointEvery: 0, dtype: 'F32', threads: 2 };
      delete settings.valid;
      const out = scratchDir(`reproduce-${name}`);
      const r = await train(model, settings, path.join(out, 'model'), { tokenizerDir: embeddedModelDir(name) });
      for (let k = 0; k < steps; k++) {
        // Same graph and data; ONNX Runtime may sum in another order on another machine (float32 rounding).
        // Measured worst |Δ| over the 3 steps of both models 4.4e-6 (a loss near 10: ulp 9.5e-7); 5e-5
        // is 11× that, room for another CPU's kernels over three updates.
        assert.ok(Math.abs(r.losses[k]! - rec.losses_every_step[k]!) < 5e-5, `step ${k + 1}: ${r.losses[k]} vs ${rec.losses_every_step[k]}`);
      }
    });
  }
});

describe('embedded CrowS-Pairs data', () => {
  it('is the canonical file (SHA-256 of the registry) with its CC BY-SA 4.0 licence and attribution', () => {
    const crows = findBenchmark('crows-pairs')!;
    const file = crows.dataset.files[0]!;
    assert.equal(sha256File(path.join(embeddedDataDir(), crows.dataset.folder, file.path)), file.sha256);
    const licence = readFileSync(path.join(embeddedDataDir(), crows.dataset.folder, 'LICENSE.md'), 'utf8');
    assert.match(licence, /CC BY-SA 4\.0/);
    assert.match(licence, /Nangia/);
  });

  it('the repository stays lean: tracked files under 50 MB in total', () => {
    const r = spawnSync('git', ['ls-files', '-z'], { cwd: repoRoot(), encoding: 'utf8' });
    if (r.status !== 0) return assert.fail('git ls-files failed');
    const total = r.stdout.split('\0').filter((f) => f !== '' && existsSync(path.join(repoRoot(), f))).reduce((s, f) => s + statSync(path.join(repoRoot(), f)).size, 0);
    assert.ok(total < 50_000_000, `${(total / 1e6).toFixed(1)} MB`);
  });
});

describe('embedded lm_corpus excerpt and StereoSet', () => {
  const full = (split: string): string[] => readFileSync(path.join(DATA, 'lm_corpus', `${split}.txt`), 'utf8').split('\n');
  const shipped = (split: string): string => readFileSync(path.join(embeddedDataDir(), 'lm_corpus', `${split}.txt`), 'utf8');

  it('valid.txt is the first 200 lines of the full corpus; train.txt every 20th line; disjoint; SHA-256s as SOURCE.md says', () => {
    const source = readFileSync(path.join(embeddedDataDir(), 'lm_corpus', 'SOURCE.md'), 'utf8');
    assert.equal(shipped('valid'), full('valid').slice(0, 200).join('\n') + '\n');
    const train = full('train').filter((l) => l !== '');
    assert.equal(shipped('train'), train.filter((_, i) => i % 20 === 0).join('\n') + '\n');
    const validSet = new Set(shipped('valid').split('\n').filter((l) => l !== ''));
    // Paragraph-level disjointness (the corpus is split by document); short repeated lines such as
    // "CHAPTER I" may occur in both splits, so only substantial paragraphs are compared.
    assert.ok(shipped('train').split('\n').filter((l) => l.length > 80).every((l) => !validSet.has(l)));
    for (const split of ['train', 'valid']) assert.ok(source.includes(sha256File(path.join(embeddedDataDir(), 'lm_corpus', `${split}.txt`))), `${split} SHA-256 in SOURCE.md`);
    assert.ok(Buffer.byteLength(shipped('train')) + Buffer.byteLength(shipped('valid')) <= 2_000_000, '≤ 2 MB');
  });

  it('StereoSet intrasentence ships as the registry file (SHA-256) with its CC BY-SA 4.0 licence', () => {
    const file = STEREOSET_LOCAL_ALTERNATIVE;
    assert.equal(sha256File(path.join(embeddedDataDir(), STEREOSET_DATASET.folder, file.path)), file.sha256);
    const licence = readFileSync(path.join(embeddedDataDir(), STEREOSET_DATASET.folder, 'LICENSE.md'), 'utf8');
    assert.match(licence, /CC BY-SA 4\.0/);
    assert.match(licence, /Nadeem/);
  });
});

describe('the main command runs offline on the embedded defaults', () => {
  it('dike measure with no model and no data scores CrowS-Pairs on dike-bert-mini', () => {
    const r = dikeOffline('measure', '--limit', '60', '--json');
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout) as { model: { dir: string }; results: { benchmark: string; overall: { n: number } }[] };
    assert.equal(path.basename(report.model.dir), 'dike-bert-mini');
    assert.equal(report.results[0]!.benchmark, 'crows-pairs');
  });

  it('dike audit with no model and no data audits a pruning variant with its quality proxy; unshipped benchmarks ask for data in one line', () => {
    const out = path.join(scratchDir('offline-audit'), 'audit');
    const r = dikeOffline('audit', '--sweep', 'magnitude:0.5', '--limit', '40', '--resamples', '1000', '--quality-lines', '5', '--out', out, '--quiet');
    assert.equal(r.code, 0, r.stderr);
    const results = JSON.parse(readFileSync(path.join(out, 'results.json'), 'utf8')) as {
      benchmarks: { benchmark: string; variants: unknown[] }[];
      dense: { quality?: { kind: string; value: number; tokens: number } };
      variants: { quality?: { kind: string; value: number; tokens: number } }[];
    };
    assert.equal(results.benchmarks[0]!.benchmark, 'crows-pairs');
    assert.equal(results.benchmarks[0]!.variants.length, 1);
    assert.ok(existsSync(path.join(out, 'report.html')));
    // The quality proxy now runs offline too, on the shipped valid.txt excerpt (the first 200 lines of the
    // full one, so the same lines as with --data: see the excerpt test above).
    for (const m of [results.dense, ...results.variants]) {
      assert.equal(m.quality?.kind, 'pseudo-perplexity');
      assert.ok(Number.isFinite(m.quality.value) && m.quality.value > 1);
    }
    const s = dikeOffline('measure', '--benchmark', 'seat', '--limit', '5');
    assert.notEqual(s.code, 0);
    assert.equal(s.stderr.trimEnd().split('\n').length, 1);
    assert.match(s.stderr, /dike data fetch seat/);
  });
});
