#!/usr/bin/env node
/**
 * `dike` command line: parsing and printing only; the work is in the library.
 * Every error reaches the user as one line on stderr and a non-zero exit code.
 */
import { DikeError } from '../errors.js';
import { inspectCommand } from './inspect.js';
import { logprobsCommand } from './logprobs.js';
import { measureCommand } from './measure.js';
import { dataCommand } from './data.js';
import { compressCommand } from './compress.js';
import { auditCommand } from './audit.js';
import { locateCommand } from './locate.js';
import { saliencyCommand } from './saliency.js';
import { exportCommand } from './export.js';
import { distillCommand, trainCommand } from './train.js';
import { helpText, UsageError, type CommandSpec } from './flags.js';

interface Command {
  spec: CommandSpec;
  run(argv: string[]): Promise<void>;
}

const COMMANDS: Record<string, Command> = {
  audit: auditCommand,
  locate: locateCommand,
  saliency: saliencyCommand,
  inspect: inspectCommand,
  logprobs: logprobsCommand,
  measure: measureCommand,
  data: dataCommand,
  compress: compressCommand,
  export: exportCommand,
  train: trainCommand,
  distill: distillCommand,
};

function help(): string {
  const lines = ['usage: dike <command> [options]', '', 'commands:'];
  for (const [name, c] of Object.entries(COMMANDS)) lines.push(`  ${name.padEnd(10)} ${c.spec.summary}`);
  lines.push('', 'Run `dike <command> --help` for its options.');
  return lines.join('\n');
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(help() + '\n');
    return name === undefined ? 2 : 0;
  }
  const cmd = COMMANDS[name];
  if (cmd === undefined || !Object.hasOwn(COMMANDS, name)) {
    throw new UsageError(`dike: unknown command "${name}" (commands: ${Object.keys(COMMANDS).join(', ')}; see dike --help)`);
  }
  const end = rest.indexOf('--');
  const flags = end < 0 ? rest : rest.slice(0, end);
  if (flags.includes('--help') || flags.includes('-h')) {
    process.stdout.write(helpText(cmd.spec) + '\n');
    return 0;
  }
  await cmd.run(rest);
  return 0;
}

/** The error as the one line the user sees (a message with line breaks is joined, never split). */
function oneLine(e: unknown): string {
  const join = (m: string): string => m.replace(/\s*[\r\n]+\s*/g, ' ').trim();
  if (e instanceof UsageError) return join(e.message.startsWith('dike') ? e.message : `dike: ${e.message}`);
  if (e instanceof DikeError) return join(`dike: ${e.message}`);
  const msg = e instanceof Error ? e.message : String(e);
  return `dike: internal error: ${join(msg.split('\n')[0] ?? '')} (set DIKE_DEBUG=1 for a stack trace)`;
}

/**
 * Exit with `code` once everything written to stdout and stderr has reached the kernel. A pipe is
 * asynchronous in Node: `process.exit` straight after a large write would cut the output at the pipe's
 * buffer (64 KiB) for every reader slower than us. A reader that goes away (EPIPE, e.g. `| head`) ends
 * the wait instead of raising.
 */
function exitWhenFlushed(code: number): void {
  process.exitCode = code;
  const streams = [process.stdout, process.stderr];
  let pending = streams.length;
  const done = (): void => {
    if (--pending === 0) process.exit(code);
  };
  for (const s of streams) {
    let finished = false;
    const finish = (): void => {
      if (!finished) {
        finished = true;
        done();
      }
    };
    s.on('error', finish);
    if (s.writableLength === 0) finish();
    else s.once('drain', finish);
  }
}

// A reader that closes the pipe early (`dike … | head`) ends the command quietly, as SIGPIPE would.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(typeof process.exitCode === 'number' ? process.exitCode : 0);
});

main(process.argv.slice(2)).then(
  (code) => exitWhenFlushed(code),
  (e: unknown) => {
    process.stderr.write(oneLine(e) + '\n');
    if (process.env['DIKE_DEBUG'] && e instanceof Error && e.stack) process.stderr.write(e.stack + '\n');
    exitWhenFlushed(e instanceof UsageError ? 2 : 1);
  },
);
