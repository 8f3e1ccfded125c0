import { resolveModel } from '../embedded.js';
import { readFileSync } from 'node:fs';
import { DikeError } from '../errors.js';
import { loadCheckpoint } from '../model/checkpoint.js';
import { ModelRunner } from '../runtime/session.js';
import { scoreTexts, type TextScore } from '../score/text.js';
import { parseArgs } from 'node:util';
import { executionFlag, parsing, positiveInt, UsageError } from './args.js';

const usage = 'dike logprobs <model-dir> (--text "…" … | --file sentences.txt) [--json] [--threads N] [--max-tokens N] [--execution simulated|deployed]';

/** One sentence per line; blank lines are not sentences. Keeps each sentence's line number. */
export function readSentences(file: string): { text: string; line: number }[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new DikeError(file, '', (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : `cannot read: ${(e as Error).message}`);
  }
  const out: { text: string; line: number }[] = [];
  text.split(/\r?\n/).forEach((l, i) => {
    if (l.trim() !== '') out.push({ text: l, line: i + 1 });
  });
  if (out.length === 0) throw new DikeError(file, '', 'no sentences (the file is empty)');
  return out;
}

function printText(s: TextScore & { line?: number }): string {
  const lines = [`${s.line !== undefined ? `line ${s.line}: ` : ''}${JSON.stringify(s.text)}  total ${s.total.toFixed(4)} over ${s.logprobs.length} tokens`];
  s.positions.forEach((p, j) => lines.push(`  ${String(p).padStart(4)}  ${String(s.ids[p]).padStart(6)}  ${s.logprobs[j]!.toFixed(4).padStart(10)}  ${s.tokens[p]}`));
  return lines.join('\n');
}

export const logprobsCommand = {
  summary: 'per-token log-probabilities of sentences (causal: log P(t | BOS, prefix); masked: pseudo-log-likelihood)',
  usage,
  async run(argv: string[]): Promise<void> {
    const { values, positionals } = parsing(usage, () =>
      parseArgs({
        args: argv,
        allowPositionals: true,
        strict: true,
        options: {
        text: { type: 'string', multiple: true },
        file: { type: 'string' },
        json: { type: 'boolean' },
        threads: { type: 'string' },
        'max-tokens': { type: 'string' },
        execution: { type: 'string' },
        },
      }),
    );
    if (positionals.length !== 1) throw new UsageError(`expected one model directory\nusage: ${usage}`);
    const texts = values.text ?? [];
    if ((texts.length > 0) === (values.file !== undefined)) throw new UsageError(`give --text (one or more) or --file, not both\nusage: ${usage}`);
    const items = values.file !== undefined ? readSentences(values.file) : texts.map((text) => ({ text, line: undefined }));
    const threads = positiveInt(values.threads, '--threads');
    const maxTokens = positiveInt(values['max-tokens'], '--max-tokens');
    const execution = executionFlag(values.execution);
    const ckpt = loadCheckpoint(resolveModel(positionals[0]!).dir);
    const runner = await ModelRunner.create(ckpt, { execution, ...(threads !== undefined ? { threads } : {}) });
    let scores: TextScore[];
    try {
      scores = await scoreTexts(ckpt, runner, items.map((i) => i.text), maxTokens !== undefined ? { maxTokens } : {});
    } catch (e) {
      // Name the input line, not the internal index, when the sentences came from a file.
      if (e instanceof DikeError && values.file !== undefined && /^text \d+$/.test(e.place)) {
        const line = items[Number(e.place.slice(5)) - 1]!.line;
        throw new DikeError(values.file, `line ${line}`, e.problem);
      }
      throw e;
    } finally {
      await runner.dispose();
    }
    const out = scores.map((s, i) => ({ ...(items[i]!.line !== undefined ? { line: items[i]!.line } : {}), ...s }));
    process.stdout.write((values.json ? JSON.stringify(out, null, 2) : out.map(printText).join('\n\n')) + '\n');
  },
};
