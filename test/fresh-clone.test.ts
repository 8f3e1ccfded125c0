/**
 * A user's first minutes: a fresh copy of the repository with no `../shared` beside it and no
 * DIKE_DATA. Calibrated compression (GPTQ) and the audit's quality proxy must work on what ships
 * (data/lm_corpus, data/crows-pairs, data/stereoset), and a missing calibration text names --calibration.
 */
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { assertOneLineError, repoRoot, scratchDir, type CliRun } from './fixtures.js';

interface Quality {
  kind: string;
  value: number;
  tokens: number;
}

describe('a fresh clone with no ../shared beside it', () => {
  const root = scratchDir('fresh-clone');
  const clone = path.join(root, 'dike');
  const work = path.join(root, 'work');

  /** Run the clone's CLI from a working folder beside it, as on a machine that never saw ../shared. */
  function dikeFresh(...args: string[]): CliRun {
    const env: NodeJS.ProcessEnv = { ...process.env, DIKE_DEBUG: '' };
    delete env['DIKE_DATA'];
    const r = spawnSync(process.execPath, [path.join(clone, 'dist', 'src', 'cli', 'main.js'), ...args], { cwd: work, env, encoding: 'utf8' });
    return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
  }

  before(() => {
    // The tracked files, as `git clone` gives them (the working tree's versions, so uncommitted edits are
    // tested too; untracked files are not copied, as a clone would not have them).
    const ls = spawnSync('git', ['ls-files', '-z'], { cwd: repoRoot(), encoding: 'utf8' });
    assert.equal(ls.status, 0, ls.stderr);
    for (const f of ls.stdout.split('\0').filter((x) => x !== '')) {
      const src = path.join(repoRoot(), f);
      if (!existsSync(src)) continue; // deleted in the working tree
      mkdirSync(path.dirname(path.join(clone, f)), { recursive: true });
      copyFileSync(src, path.join(clone, f));
    }
    // The installed dependencies (npm ci would fetch the same pinned versions), then the project's own build.
    symlinkSync(path.join(repoRoot(), 'node_modules'), path.join(clone, 'node_modules'), 'dir');
    const tsc = spawnSync(process.execPath, [path.join(clone, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { cwd: clone, encoding: 'utf8' });
    assert.equal(tsc.status, 0, tsc.stdout + tsc.stderr);
    mkdirSync(work);
    assert.ok(!existsSync(path.join(root, 'shared')), 'no ../shared beside the clone');
  });

  it('dike compress dike-bert-mini --method gptq calibrates on the shipped lm_corpus excerpt', () => {
    const r = dikeFresh('compress', 'dike-bert-mini', '--method', 'gptq', '--bits', '4', '--group-size', '32', '--samples', '16', '--seq-len', '64', '--out', 'g');
    assert.equal(r.code, 0, r.stderr);
    const record = JSON.parse(readFileSync(path.join(work, 'g', 'compression.json'), 'utf8')) as {
      recipe: { calibration?: { file: string } };
      calibration: { sequences: number; seq_len: number; token_sha256: string } | null;
    };
    assert.equal(record.recipe.calibration?.file, 'train.txt');
    assert.equal(record.calibration?.sequences, 16);
    assert.equal(record.calibration?.seq_len, 64);
    assert.match(record.calibration?.token_sha256 ?? '', /^[0-9a-f]{64}$/);
    assert.ok(existsSync(path.join(work, 'g', 'quantization.safetensors')));
  });

  it('dike audit --variant gptq:… reports the quality proxy for the dense model and every variant', () => {
    const r = dikeFresh('audit', '--variant', 'gptq:bits=4,group_size=32', '--sweep', 'magnitude:0.5', '--benchmark', 'crows-pairs,stereoset', '--limit', '30', '--quality-lines', '5', '--out', 'a', '--quiet');
    assert.equal(r.code, 0, r.stderr);
    const results = JSON.parse(readFileSync(path.join(work, 'a', 'results.json'), 'utf8')) as {
      dense: { quality?: Quality };
      variants: { name: string; quality?: Quality }[];
      benchmarks: { benchmark: string }[];
      data: { file: string; sha256: string }[];
    };
    assert.deepEqual(results.benchmarks.map((b) => b.benchmark), ['crows-pairs', 'stereoset']);
    assert.equal(results.variants.length, 2);
    for (const m of [results.dense, ...results.variants]) {
      assert.ok(m.quality !== undefined, 'quality present');
      assert.equal(m.quality.kind, 'pseudo-perplexity');
      assert.ok(Number.isFinite(m.quality.value) && m.quality.value > 1, `finite pseudo-perplexity, got ${m.quality.value}`);
      assert.ok(m.quality.tokens > 20, `tokens scored: ${m.quality.tokens}`);
    }
    assert.ok(results.data.some((d) => /lm_corpus\/valid\.txt \(first 5 lines\)/.test(d.file)), 'the held-out text is recorded with its checksum');
  });

  it('dike locate attributes a variant to layer × module units offline', () => {
    const r = dikeFresh('locate', '--variant', 'magnitude:sparsity=0.5', '--limit', '20', '--quality-lines', '0', '--no-leave-one-out', '--out', 'loc', '--quiet');
    assert.equal(r.code, 0, r.stderr);
    const loc = JSON.parse(readFileSync(path.join(work, 'loc', 'locate.json'), 'utf8')) as { benchmarks: { benchmark: string; units: { unit: string; delta?: number; predicted?: number }[] }[] };
    assert.equal(loc.benchmarks[0]!.benchmark, 'crows-pairs');
    // dike-bert-mini: 4 layers × {attention, ffn}, each measured and predicted.
    assert.equal(loc.benchmarks[0]!.units.length, 8);
    assert.ok(loc.benchmarks[0]!.units.every((u) => Number.isFinite(u.delta) && Number.isFinite(u.predicted)));
    assert.ok(existsSync(path.join(work, 'loc', 'report.html')));
  });

  it('a calibration text that is not there is one line naming --calibration', () => {
    const r = dikeFresh('compress', 'dike-bert-mini', '--method', 'gptq', '--bits', '4', '--calibration', 'nowhere.txt', '--out', 'x');
    assertOneLineError(r, 'nowhere.txt', '--calibration');
    assert.ok(!existsSync(path.join(work, 'x')), 'nothing written');
  });
});
