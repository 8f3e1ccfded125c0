/**
 * bench/grid.ts build rows (issue 16): a row whose model is trained before the audit (distilled
 * student, repaired pruned model) is built once into <out>/<model>/built/, audited as a directory
 * variant, reused on a rerun, and marked unavailable where it does not apply.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { EVERY_OTHER, ROWS, runGrid, selectRows, type GridRow } from '../bench/grid.js';
import { embeddedDataDir, embeddedModelDir } from '../src/embedded.js';
import { readSafetensors } from '../src/model/safetensors.js';
import { modelDir } from './fixtures.js';
import { modelSize } from '../src/audit/size.js';
import { loadCheckpoint } from '../src/model/checkpoint.js';
import { dataSeen, overlapWarnings } from '../src/audit/audit.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'dike-grid-build-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** Fraction of exact zeros in a stored F32/F16 matrix, read from the bytes. */
function zeroFraction(file: string, name: string): number {
  const t = readSafetensors(file).tensors.get(name)!;
  const width = t.dtype === 'F32' ? 4 : 2;
  let zeros = 0;
  const n = t.bytes.length / width;
  for (let i = 0; i < n; i++) {
    let allZero = true;
    for (let k = 0; k < width; k++) if (t.bytes[i * width + k] !== 0 && !(k === width - 1 && t.bytes[i * width + k] === 0x80)) allZero = false;
    if (allZero) zeros++;
  }
  return zeros / n;
}

describe('grid build rows', () => {
  it('DistilBERT student: one block out of two, the first kept', () => {
    assert.equal(EVERY_OTHER(4), '0,2');
    assert.equal(EVERY_OTHER(5), '0,2,4');
    assert.equal(EVERY_OTHER(1), '0');
    assert.equal(EVERY_OTHER(12), '0,2,4,6,8,10');
  });

  it('the shipped rows include plain KD, fair KD, the repair baseline and its control; plain selects KD but not the others', () => {
    const names = ROWS.map((r) => r.name);
    for (const n of ['kd half the blocks', 'fair-kd β=0.01', 'magnitude-0.5 + fine-tune', 'magnitude-0.5 + repair β=0.01']) assert.ok(names.includes(n), n);
    const plain = selectRows('plain').map((r) => r.name);
    assert.ok(plain.includes('kd half the blocks') && plain.includes('magnitude-0.5'));
    assert.ok(!plain.includes('magnitude-0.5 + repair β=0.01'));
  });

  it('every row can be named alone in --rows (no comma in a name), and every control and bias-aware row names a plain row that exists', () => {
    for (const r of ROWS) {
      assert.ok(!r.name.includes(','), `"${r.name}" has a comma: --rows splits on commas`);
      assert.deepEqual(selectRows(r.name).map((x) => x.name), [r.name]);
      if (r.kind === 'control' || r.kind === 'bias-aware') assert.ok(ROWS.some((p) => p.name === r.plain && p.kind === 'plain'), `${r.name}: plain row "${r.plain}"`);
    }
    for (const n of ['fair-wanda shuffled pairs (control)', 'fair-sparsegpt α=0 on the pairs (control)', 'fair-sparsegpt unrelated pairs α=0.1 (control)']) assert.ok(ROWS.some((r) => r.name === n && r.kind === 'control'), n);
  });

  it('compresses, trains with the mask kept, audits the result, and reuses it on a rerun; causal-only rows are unavailable on BERT', async () => {
    const rows: GridRow[] = [
      { name: 'magnitude-0.5', kind: 'plain', spec: () => 'magnitude:sparsity=0.5', bitless: true },
      {
        name: 'mag + repair', kind: 'bias-aware', plain: 'magnitude-0.5', bitless: true, spec: () => '',
        build: { command: 'train', compress: 'magnitude:sparsity=0.5', causalOnly: true, args: (d) => ['--keep-sparsity', '--data', path.join(d, 'lm_corpus', 'train.txt'), '--seq', '16', '--batch', '2', '--steps', '2', '--lr', '1e-3', '--warmup', '0', '--cf-pairs', 'stereoset', '--cf-per-step', '1', '--cf-weight', '0.01', '--pairs-data', d] },
      },
    ];
    const opts = { bits: [4], rows, benchmarks: ['crows-pairs'], dataDir: embeddedDataDir(), out: path.join(tmp, 'grid'), limit: 6, qualityLines: 2, threads: 1, resamples: 200 };
    const gpt = modelDir('tiny-gpt2');
    const [g] = await runGrid({ ...opts, models: [gpt] });
    const built = path.join(tmp, 'grid', gpt.replace(/[^A-Za-z0-9_.-]/g, '_'), 'built', 'mag_repair');
    const training = JSON.parse(readFileSync(path.join(built, 'training.json'), 'utf8')) as { steps?: number; settings?: { steps?: number } };
    assert.equal(training.settings?.steps ?? training.steps, 2);
    // the zeros of the compressed model are still zeros after the fine-tune (about half of each matrix)
    const z = zeroFraction(path.join(built, 'model.safetensors'), 'transformer.h.0.mlp.c_fc.weight');
    assert.ok(z >= 0.5 && z < 0.51, `zero fraction ${z}`);
    // … and compression.json says so, so the audit sizes it as the pruned model it started from
    const cj = JSON.parse(readFileSync(path.join(built, 'compression.json'), 'utf8')) as { steps: { matrices: { weight: string; sparsity: number }[] }[] };
    assert.equal(cj.steps[0]!.matrices.find((m) => m.weight === 'transformer.h.0.mlp.c_fc.weight')!.sparsity, z);
    assert.deepEqual(modelSize(loadCheckpoint(built)), modelSize(loadCheckpoint(built + '.compressed')));
    // the audit knows the repaired model saw StereoSet pairs: a StereoSet audit would warn, a CrowS-Pairs one does not
    const saw = dataSeen(undefined, built, embeddedDataDir())!;
    assert.equal(saw.pairs?.length, 1);
    assert.equal(saw.pairs![0]!.source, 'stereoset');
    assert.equal(saw.pairs![0]!.method, 'train --cf-pairs');
    const w = overlapWarnings([{ name: 'mag_repair', saw }], [{ name: 'stereoset', folder: 'stereoset' }, { name: 'crows-pairs', folder: 'crows-pairs' }], embeddedDataDir());
    assert.deepEqual(w, ['warning: mag_repair was debiased (step 1, train --cf-pairs) with pairs from stereoset (pairs=stereoset), which this audit scores: its Δ on stereoset is not held out']);
    const cell = g!.cells.find((c) => c.row.name === 'mag + repair')!;
    assert.equal(cell.variant, 'mag_repair');
    assert.ok(g!.results.benchmarks[0]!.variants.some((v) => v.variant === 'mag_repair'));
    // rerun: the finished model is reused, not retrained
    const before = statSync(path.join(built, 'training.json')).mtimeMs;
    await runGrid({ ...opts, models: [gpt] });
    assert.equal(statSync(path.join(built, 'training.json')).mtimeMs, before);
    // a masked LM: the causal-only row is listed as unavailable
    const [b] = await runGrid({ ...opts, models: [embeddedModelDir('dike-bert-mini')], out: path.join(tmp, 'grid-bert') });
    const bc = b!.cells.find((c) => c.row.name === 'mag + repair')!;
    assert.match(bc.unavailable ?? '', /causal LMs only/);
  });
});
