/**
 * All five benchmarks run from the CLI on the small trained models (on subsets, for CI time), each
 * result carrying a score with its 95% interval and item count, per-group intervals, per-item scores
 * and the data files' SHA-256.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { DATA, modelDir, CLI } from './fixtures.js';
import type { MeasureReport } from '../src/measure/run.js';

const ALL = ['crows-pairs', 'stereoset', 'seat', 'winobias', 'bbq'];

for (const model of ['small-bert-mlm', 'small-gpt2']) {
  describe(`dike measure on ${model}`, () => {
    it('runs every benchmark with intervals, groups, items and data checksums', () => {
      const r = spawnSync(process.execPath, [CLI, 'measure', modelDir(model), '--benchmark', ALL.join(','), '--data', DATA, '--limit', '6', '--json', '--quiet', '--threads', '2'], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      const rep = JSON.parse(r.stdout) as MeasureReport;
      assert.equal(rep.tool, 'dike');
      assert.deepEqual(rep.results.map((x) => x.benchmark), ALL);
      for (const res of rep.results) {
        const where = `${model}/${res.benchmark}/${res.scorer}`;
        assert.ok(res.n > 0, where);
        assert.ok(res.resamples >= 1000, where);
        // A NaN or infinite headline is a defect, not a case to skip.
        assert.ok(Number.isFinite(res.score), `${where}: score ${res.score}`);
        assert.ok(Number.isFinite(res.ci95[0]) && Number.isFinite(res.ci95[1]), `${where}: ci95 ${res.ci95}`);
        assert.ok(res.ci95[0] <= res.score + 1e-9 && res.score - 1e-9 <= res.ci95[1], `${where}: ${res.score} outside ${res.ci95}`);
        assert.ok(Object.keys(res.groups).length > 0, where);
        for (const g of Object.values(res.groups)) assert.ok(g.n > 0 && g.ci95.length === 2, where);
        assert.ok(res.items.length > 0 && res.items.every((i) => typeof i.id === 'string' && typeof i.group === 'string'), where);
        assert.equal(new Set(res.items.map((i) => i.id)).size, res.items.length, `${where}: item ids are unique`);
        assert.ok(res.data.length > 0, where);
        for (const d of res.data) {
          const sha = createHash('sha256').update(readFileSync(path.join(DATA, d.file))).digest('hex');
          assert.equal(d.sha256, sha, `${where}: ${d.file}`);
        }
      }
    });
  });
}

it('names an unknown benchmark in one line', () => {
  const r = spawnSync(process.execPath, [CLI, 'measure', modelDir('small-gpt2'), '--benchmark', 'crows-pairs,wino', '--data', DATA], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr.trim(), /^dike measure: --benchmark: unknown item "wino" \(expected a comma-separated list of crows-pairs, stereoset, seat, winobias, bbq, crows-pairs@even, crows-pairs@odd\) \(see dike measure --help\)$/);
});

