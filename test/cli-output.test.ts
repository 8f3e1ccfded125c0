/**
 * Whatever stdout is, `dike` writes its whole output and then exits with its code: here stdout is a
 * real pipe (child_process.spawn) read slowly, in small pauses, so the pipe is full most of the time.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { DATA, dikePiped, modelDir, scratchDir } from './fixtures.js';

const slowRead = (args: string[], pauseMs = 3): ReturnType<typeof dikePiped> => dikePiped(args, { pauseMs });

describe('stdout on a slow pipe gets the whole document', () => {
  it('dike logprobs --file <1,000 lines> --json: > 1 MB of JSON, exit 0', async () => {
    const dir = scratchDir('pipe');
    const file = path.join(dir, 'sentences.txt');
    const lines = Array.from({ length: 1000 }, (_, i) => `Sentence ${i}: the nurse said that she was tired after the long shift at the hospital.`);
    writeFileSync(file, lines.join('\n') + '\n');
    const r = await slowRead(['logprobs', modelDir('tiny-gpt2'), '--file', file, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.length > 1_000_000, `only ${r.stdout.length} bytes`);
    assert.ok(r.chunks > 4, `read in ${r.chunks} chunks: the pipe filled`);
    const out = JSON.parse(r.stdout) as { line: number; total: number }[];
    assert.equal(out.length, 1000);
    assert.equal(out[999]!.line, 1000);
    assert.ok(out.every((o) => Number.isFinite(o.total)));
  });

  it('dike measure --json --quiet: the whole report, exit 0', async () => {
    const r = await slowRead(['measure', modelDir('tiny-bert-mlm'), '--benchmark', 'crows-pairs', '--data', DATA, '--json', '--quiet'], 1);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.length > 500_000 && r.chunks > 4, `${r.stdout.length} bytes in ${r.chunks} chunks`);
    const report = JSON.parse(r.stdout) as { results: { benchmark: string; items: unknown[] }[] };
    assert.equal(report.results[0]!.benchmark, 'crows-pairs');
    assert.equal(report.results[0]!.items.length, 1508);
  });

  it('an error after a usage problem still exits non-zero with its one line', async () => {
    const r = await slowRead(['logprobs', modelDir('tiny-gpt2'), '--threads', 'x']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--threads/);
  });
});
