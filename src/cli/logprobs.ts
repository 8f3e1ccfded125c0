import { resolveModelArg } from '../testbed/testbed.js';
import { readFileSync } from 'node:fs';
import { DikeError } from '../errors.js';
import { loadCheckpoint } from '../model/checkpoint.js';
import { ModelRunner } from '../runtime/session.js';
import { scoreTexts, type TextScore } from '../score/text.js';
import { parseFlags, type CommandSpec } from './flags.js';
import { EXECUTION_FLAG, THREADS_FLAG, MODEL_POSITIONAL_HELP } from './common-flags.js';

const spec: CommandSpec = {
  name: 'logprobs',
  summary: 'per-token log-probabilities of sentences (causal: log P(t | BOS, prefix); masked: pseudo-log-likelihood)',
  positionals: { usage: '<model-dir>', min: 1, max: 1, help: MODEL_POSITIONAL_HELP },
  flags: {
    text: { type: 'string', value: '"…"', multiple: true, help: 'a sentence to score' },
    file: { type: 'string', value: 'sentences.txt', help: 'score every non-blank line of a file' },
    json: { type: 'boolean', help: 'print JSON (text, tokens, ids, positions, logprobs, total per sentence)' },
    threads: THREADS_FLAG,
    'max-tokens': { type: 'int', min: 1, help: 'refuse sentences longer than this many tokens' },
    execution: EXECUTION_FLAG,
  },
  notes: ['Give --text (one or more) or --file, not both.'],
};

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
  spec,
  async run(argv: string[]): Promise<void> {
    const args = parseFlags(spec, argv);
    const texts = args.all('text');
    const file = args.str('file');
    if ((texts.length > 0) === (file !== undefined)) throw args.error('--text/--file', 'give --text (one or more) or --file, not both');
    const threads = args.num('threads');
    const maxTokens = args.num('max-tokens');
    const execution = args.str('execution') as 'simulated' | 'deployed';
    const items = file !== undefined ? readSentences(file) : texts.map((text) => ({ text, line: undefined }));
    const ckpt = loadCheckpoint((await resolveModelArg(args.positionals[0]!, { log: (l) => process.stderr.write(l + '\n') })).dir);
    const runner = await ModelRunner.create(ckpt, { execution, ...(threads !== undefined ? { threads } : {}) });
    let scores: TextScore[];
    try {
      scores = await scoreTexts(ckpt, runner, items.map((i) => i.text), maxTokens !== undefined ? { maxTokens } : {});
    } catch (e) {
      // Name the input line, not the internal index, when the sentences came from a file.
      if (e instanceof DikeError && file !== undefined && /^text \d+$/.test(e.place)) {
        const line = items[Number(e.place.slice(5)) - 1]!.line;
        throw new DikeError(file, `line ${line}`, e.problem);
      }
      throw e;
    } finally {
      await runner.dispose();
    }
    const out = scores.map((s, i) => ({ ...(items[i]!.line !== undefined ? { line: items[i]!.line } : {}), ...s }));
    process.stdout.write((args.bool('json') ? JSON.stringify(out, null, 2) : out.map(printText).join('\n\n')) + '\n');
  },
};
