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
import { exportCommand } from './export.js';
import { distillCommand, trainCommand } from './train.js';
import { UsageError } from './args.js';

interface Command {
  summary: string;
  usage: string;
  run(argv: string[]): Promise<void>;
}

const COMMANDS: Record<string, Command> = {
  audit: auditCommand,
  locate: locateCommand,
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
  for (const [name, c] of Object.entries(COMMANDS)) lines.push(`  ${name.padEnd(10)} ${c.summary}`);
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
  if (cmd === undefined) throw new UsageError(`unknown command "${name}"\n${help()}`);
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(`usage: ${cmd.usage}\n`);
    return 0;
  }
  await cmd.run(rest);
  return 0;
}

function oneLine(e: unknown): string {
  if (e instanceof DikeError || e instanceof UsageError) return `dike: ${e.message}`;
  const msg = e instanceof Error ? e.message : String(e);
  return `dike: internal error: ${msg.split('\n')[0]} (set DIKE_DEBUG=1 for a stack trace)`;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(oneLine(e) + '\n');
    if (process.env['DIKE_DEBUG'] && e instanceof Error && e.stack) process.stderr.write(e.stack + '\n');
    process.exit(e instanceof UsageError ? 2 : 1);
  },
);
