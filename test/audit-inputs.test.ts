/**
 * A calibrated variant depends on its calibration text as much as on its recipe: editing the text
 * recompresses the variant on the next audit (a stale variant would be silently reused otherwise),
 * and an unchanged text reuses it.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { DATA, dike, modelDir, scratchDir } from './fixtures.js';
import type { AuditResults } from '../src/audit/types.js';

describe('dike audit: a changed calibration text recompresses the variant', () => {
  it('same text: reused; edited text: compressed again, new weights', () => {
    const root = scratchDir('audit-inputs');
    const text = path.join(root, 'calib.txt');
    const lines = readFileSync(path.join(DATA, 'lm_corpus', 'train.txt'), 'utf8').split('\n').slice(0, 400);
    writeFileSync(text, lines.join('\n') + '\n');
    const out = path.join(root, 'audit');
    const audit = (): AuditResults => {
      const r = dike(['audit', '--model', modelDir('tiny-bert-mlm'), '--variant', 'gptq:bits=4,group_size=32', '--calibration', text,
        '--calibration-samples', '8', '--calibration-seq-len', '32', '--data', DATA, '--limit', '8', '--quality-lines', '0', '--threads', '1', '--out', out, '--quiet']);
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(readFileSync(path.join(out, 'results.json'), 'utf8')) as AuditResults;
    };
    const weights = path.join(out, 'variants', 'gptq-bits4-group_size32', 'model.safetensors');
    const first = audit();
    const t0 = statSync(weights).mtimeMs;
    audit();
    assert.equal(statSync(weights).mtimeMs, t0, 'unchanged text: the variant is reused');
    // Other passages: the sampled calibration tokens, and so the GPTQ weights, change.
    writeFileSync(text, lines.slice(200).join('\n') + '\n');
    const edited = audit();
    assert.ok(statSync(weights).mtimeMs > t0, 'edited text: the variant is compressed again');
    assert.notEqual(edited.variants[0]!.weightsSha256, first.variants[0]!.weightsSha256);
  });
});
