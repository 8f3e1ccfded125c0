/**
 * The audit end to end from the CLI on a tiny model: a magnitude sweep and a 4-bit RTN variant on
 * CrowS-Pairs, StereoSet and SEAT (subsets); results.json carries paired statistics consistent with
 * the per-item outcomes; a run killed with SIGKILL and rerun finishes with the same results.json as an
 * uninterrupted run; the report renders in headless Chromium with its plots drawn.
 */
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { DATA, modelDir, CLI } from './fixtures.js';
import type { AuditResults } from '../src/audit/types.js';
import { openStore, storePath } from '../src/audit/store.js';
import { checkReport } from './report-check.js';

const ARGS = (out: string): string[] => [
  CLI, 'audit', '--model', modelDir('tiny-bert-mlm'),
  '--sweep', 'magnitude:0.3,0.7', '--variant', 'rtn:bits=4,group_size=32',
  '--benchmark', 'crows-pairs,stereoset,seat', '--data', DATA, '--out', out,
  '--limit', '12', '--quality-lines', '4', '--threads', '1', '--quiet',
];

/** Binomial two-sided exact McNemar, written out independently of src/audit/paired.ts. */
function mcnemar(b: number, c: number): number {
  const n = b + c;
  if (n === 0) return 1;
  let tail = 0;
  let coef = 1; // C(n, 0)
  for (let k = 0; k <= Math.min(b, c); k++) {
    tail += coef;
    coef = (coef * (n - k)) / (k + 1);
  }
  return Math.min(1, (2 * tail) / 2 ** n);
}

let uninterrupted: string;

describe('dike audit', () => {
  before(() => {
    uninterrupted = mkdtempSync(path.join(tmpdir(), 'dike-audit-'));
    const r = spawnSync(process.execPath, ARGS(uninterrupted), { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
  });

  it('writes results.json with every model, benchmark and paired comparison', () => {
    const res = JSON.parse(readFileSync(path.join(uninterrupted, 'results.json'), 'utf8')) as AuditResults;
    assert.deepEqual(res.variants.map((v) => v.name), ['magnitude-sparsity0.3', 'magnitude-sparsity0.7', 'rtn-bits4-group_size32']);
    assert.deepEqual(res.variants.map((v) => v.level ?? null), [0.3, 0.7, null]);
    assert.deepEqual(res.benchmarks.map((b) => b.benchmark), ['crows-pairs', 'stereoset', 'seat']);
    assert.ok(res.dense.quality && res.dense.quality.kind === 'pseudo-perplexity' && res.dense.quality.value > 1);
    assert.ok(res.variants.every((v) => v.quality?.lms !== undefined && v.quality.lms >= 0 && v.quality.lms <= 100), 'StereoSet LMS next to bias');
    for (const b of res.benchmarks) {
      assert.equal(b.variants.length, 3);
      for (const v of b.variants) {
        // Δ is the variant's score minus the dense score, and lies inside its own interval's span.
        assert.ok(Math.abs(v.overall.delta - (v.overall.score.score - b.dense.overall.score)) < 1e-9, `${b.benchmark}/${v.variant}`);
        assert.ok(v.overall.deltaCi95[0] <= v.overall.delta + 1e-9 && v.overall.delta - 1e-9 <= v.overall.deltaCi95[1]);
        assert.ok(v.overall.p >= 0 && v.overall.p <= 1);
        for (const c of Object.values(v.groups)) assert.ok(c.pHolm >= c.p - 1e-12, 'Holm never lowers a p-value');
      }
    }
    const crows = res.benchmarks[0]!;
    for (const v of crows.variants) {
      assert.equal(v.overall.test, 'mcnemar');
      // The discordant pairs are the flips: McNemar p from them, computed here independently.
      assert.ok(Math.abs(v.overall.p - mcnemar(v.flips.becameUnbiased, v.flips.becameBiased)) < 1e-12);
      assert.ok(Math.abs(v.flips.rate - v.flips.total / 12) < 1e-12);
      // Δ (in percentage points) = 100·(became biased − became unbiased)/n.
      assert.ok(Math.abs(v.overall.delta - (100 * (v.flips.becameBiased - v.flips.becameUnbiased)) / 12) < 1e-9);
    }
    assert.equal(res.benchmarks[2]!.variants[0]!.overall.test, 'permutation');
    assert.ok(existsSync(path.join(uninterrupted, 'report.html')));
    assert.ok(existsSync(path.join(uninterrupted, 'variants', 'rtn-bits4-group_size32', 'quantization.safetensors')));
  });

  it('report.html shows the numbers of results.json, outlines exactly the significant cells, draws the true Pareto front', () => {
    const res = JSON.parse(readFileSync(path.join(uninterrupted, 'results.json'), 'utf8')) as AuditResults;
    const html = readFileSync(path.join(uninterrupted, 'report.html'), 'utf8');
    const outlined = checkReport(html, res);
    const significant = res.benchmarks.reduce((n, b) => n + b.variants.reduce((m, v) => m + [v.overall, ...Object.values(v.groups)].filter((c) => c.significant).length, 0), 0);
    assert.equal(outlined, significant);
  });

  it('after kill -9 half-way, rerunning recomputes nothing finished and gives the same results.json', async () => {
    const out = mkdtempSync(path.join(tmpdir(), 'dike-audit-kill-'));
    const child = spawn(process.execPath, ARGS(out), { stdio: 'ignore' });
    // Wait until some benchmark runs are committed, then kill without warning.
    const deadline = Date.now() + 300_000;
    let done = 0;
    while (Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      if (!existsSync(storePath(out))) continue;
      try {
        const s = openStore(storePath(out));
        done = s.listRuns({ status: 'done' }).length;
        s.close();
      } catch {
        continue;
      }
      if (done >= 4) break;
    }
    child.kill('SIGKILL');
    await new Promise((r) => child.on('exit', r));
    assert.ok(done >= 4 && done < 16, `killed after ${done} finished runs`);
    assert.ok(!existsSync(path.join(out, 'results.json')), 'killed before the end');
    const before = openStore(storePath(out));
    const finishedKeys = before.listRuns({ status: 'done' }).map((r) => r.key).sort();
    before.close();
    const r = spawnSync(process.execPath, ARGS(out), { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const after = openStore(storePath(out));
    const runs = after.listRuns({ status: 'done' });
    after.close();
    // The runs finished before the kill were reused, not recomputed (same rows, same keys).
    for (const k of finishedKeys) assert.equal(runs.filter((x) => x.key === k).length, 1);
    assert.equal(runs.length, 16); // 4 models × (3 benchmarks + quality)
    const norm = (dir: string): string => readFileSync(path.join(dir, 'results.json'), 'utf8').split(dir).join('<out>');
    assert.equal(norm(out), norm(uninterrupted));
  });

  it('renders the report in headless Chromium with every plot drawn', async () => {
    const browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    try {
      const page = await browser.newPage();
      await page.goto('file://' + path.join(uninterrupted, 'report.html'));
      const count = async (sel: string): Promise<number> => page.locator(sel).count();
      assert.equal(await count('svg[data-chart="sweep"]'), 3, 'one sweep chart per benchmark');
      assert.equal(await count('svg[data-chart="heatmap"]'), 3);
      assert.equal(await count('svg[data-chart="pareto"]'), 3);
      assert.equal(await count('svg[data-chart="flip-rate"]'), 3);
      // Heatmap: one cell per variant × (overall + groups) for CrowS-Pairs.
      const crowsGroups = await page.locator('#crows-pairs table').nth(1).locator('tbody tr').count();
      assert.equal(await page.locator('#crows-pairs svg[data-chart="heatmap"] rect.mark').count(), crowsGroups + 3); // variants × groups rows, plus one overall cell per variant
      // Every drawn mark has a real size on screen.
      const sizes = await page.locator('svg[data-chart="sweep"] .overall-line').evaluateAll((els) => els.map((e) => (e as SVGGraphicsElement).getBBox().width));
      assert.ok(sizes.length === 3 && sizes.every((w) => w > 50), String(sizes));
      const shot = await page.screenshot({ fullPage: true });
      assert.ok(shot.byteLength > 20_000);
    } finally {
      await browser.close();
    }
  });
});
