/**
 * Drives bench/torch_bert.py (and the other torch_*.py servers): one Python process per model, asked
 * for one pass at a time so that the bench can alternate PyTorch and Dikē passes (JSON lines over
 * stdin/stdout).
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import * as readline from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import type { PassResult } from './dike.js';

export interface TorchInfo {
  torch: string;
  numpy: string;
  python: string;
  threads: number;
  openblas: { library: string; core?: string; config?: string; threads?: number } | null;
  torchConfig: string[];
  env: Record<string, string | null>;
}

export class TorchServer {
  private readonly lines: AsyncIterator<string>;

  private constructor(
    private readonly child: ChildProcessByStdio<Writable, Readable, null>,
    readonly info: TorchInfo,
    lines: AsyncIterator<string>,
  ) {
    this.lines = lines;
  }

  static async start(python: string, script: string, workloadFile: string, threads: number, env: NodeJS.ProcessEnv): Promise<TorchServer> {
    const child = spawn(python, [script, workloadFile, '--threads', String(threads)], { env, stdio: ['pipe', 'pipe', 'inherit'] });
    const failed = new Promise<never>((_, reject) => {
      child.once('error', (e) => reject(new Error(`cannot run ${python}: ${e.message}`)));
    });
    const lines = readline.createInterface({ input: child.stdout })[Symbol.asyncIterator]();
    const first = await Promise.race([lines.next(), failed]);
    if (first.done) throw new Error(`${python} ${script} exited before it was ready`);
    return new TorchServer(child, JSON.parse(first.value) as TorchInfo, lines);
  }

  async pass(caseIndex: number, withChecksum: boolean): Promise<PassResult> {
    return (await this.ask({ case: caseIndex, checksum: withChecksum })) as PassResult;
  }

  /** Send one request line and wait for its answer line (the script defines both). */
  async ask(request: object): Promise<unknown> {
    this.child.stdin.write(JSON.stringify(request) + '\n');
    const line = await this.lines.next();
    if (line.done) throw new Error('the PyTorch process ended during a request (see its error above)');
    return JSON.parse(line.value) as unknown;
  }

  /** Close its input and wait for it to exit. */
  async stop(): Promise<void> {
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.stdin.end();
    if (this.child.exitCode === null && this.child.signalCode === null) await exited;
  }
}
