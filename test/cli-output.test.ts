/**
 * Whatever stdout is, `dike` writes its whole output and then exits with its code: here stdout is a
 * real pipe (child_process.spawn) read slowly, in small pauses, so the pipe is full most of the time.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { CLI, DATA, modelDir, scratchDir } from './fixtures.js';

/** Spawn the CLI with stdout on a pipe and read it slowly: pause after every chunk, resume later. */
function slowRead(args: string[], pauseMs = 3): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, DIKE_DEBUG: '' } });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (b: Buffer) => {
      out.push(b);
      child.stdout.pause();
      setTimeout(() => child.stdout.resume(), pauseMs);
    });
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    child.on('error', reject);
    // 'close' waits for stdout to end as well as for the exit.
    child.on('close', (code) => resolve({ code, stdout: Buffer.concat(out).toString('utf8'), stderr: err }));
  });
}

describe('stdout on a slow pipe gets the whole document', () => {
  it('dike logprobs --file <1,000 lines> --json: > 1 MB of JSON, exit 0', async () => {
    const dir = scratchDir('pipe');
    const file = path.join(dir, 'sentences.txt');
    const lines = Array.from({ length: 1000 }, (_, i) => `Sentence ${i}: the nurse said that she was tired after the long shift at the hospital.`);
    writeFileSync(file, lines.join('\n') + '\n');
    const r = await slowRead(['logprobs', modelDir('tiny-gpt2'), '--file', file, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.length > 1_000_000, `only ${r.stdout.length} bytes`);
    const out = JSON.parse(r.stdout) as { line: number; total: number }[];
    assert.equal(out.length, 1000);
    assert.equal(out[999]!.line, 1000);
    assert.ok(out.every((o) => Number.isFinite(o.total)));
  });

  it('dike measure --json --quiet: the whole report, exit 0', async () => {
    const r = await slowRead(['measure', modelDir('tiny-bert-mlm'), '--benchmark', 'crows-pairs', '--data', DATA, '--json', '--quiet'], 1);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.length > 500_000, `only ${r.stdout.length} bytes`);
    const report = JSON.parse(r.stdout) as { results: { benchmark: string; items: unknown[] }[] };
    assert.equal(report.results[0]!.benchmark, 'crows-pairs');
    assert.ok(report.results[0]!.items.length > 1000);
  });

  it('an error after a usage problem still exits non-zero with its one line', async () => {
    const r = await slowRead(['logprobs', modelDir('tiny-gpt2'), '--threads', 'x']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--threads/);
  });
});
