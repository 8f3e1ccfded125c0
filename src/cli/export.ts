import { resolveModelArg } from '../testbed/testbed.js';
import { renameSync, writeFileSync } from 'node:fs';
import { DikeError } from '../errors.js';
import { loadCheckpoint } from '../model/checkpoint.js';
import { exportOnnx } from '../runtime/export.js';
import { parseFlags, type CommandSpec } from './flags.js';
import { EXECUTION_FLAG } from './common-flags.js';

const spec: CommandSpec = {
  name: 'export',
  summary: 'write a model as ONNX files (body → hidden states, head → logits), simulated or on integer kernels',
  positionals: { usage: '<model-dir>', min: 1, max: 1 },
  flags: {
    out: { type: 'string', value: 'model.onnx', required: true, help: 'the body file; the head goes beside it as <name>.head.onnx' },
    execution: EXECUTION_FLAG,
    'accuracy-level': { type: 'int', min: 0, max: 4, help: 'MatMulNBits accuracy level (deployed 4-bit)' },
    'int8-kernel': { type: 'enum', choices: ['DynamicQuantizeMatMul', 'MatMulInteger'], help: 'kernel for deployed 8-bit matrices' },
  },
};

/** The head file beside the body file: model.onnx → model.head.onnx. */
export function headPath(out: string): string {
  return out.endsWith('.onnx') ? `${out.slice(0, -'.onnx'.length)}.head.onnx` : `${out}.head.onnx`;
}

function writeAtomic(file: string, bytes: Uint8Array): void {
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    writeFileSync(tmp, bytes);
    renameSync(tmp, file);
  } catch (e) {
    throw new DikeError(file, '', `cannot write: ${(e as Error).message}`);
  }
}

export const exportCommand = {
  spec,
  async run(argv: string[]): Promise<void> {
    const args = parseFlags(spec, argv);
    const out = args.str('out')!;
    const execution = args.str('execution') as 'simulated' | 'deployed';
    const level = args.num('accuracy-level');
    const kernel = args.str('int8-kernel') as 'DynamicQuantizeMatMul' | 'MatMulInteger' | undefined;
    const ckpt = loadCheckpoint((await resolveModelArg(args.positionals[0]!, { log: (l) => process.stderr.write(l + '\n') })).dir);
    const exported = exportOnnx(ckpt, {
      execution,
      deploy: { ...(level !== undefined ? { accuracyLevel: level } : {}), ...(kernel !== undefined ? { int8Kernel: kernel } : {}) },
    });
    const head = headPath(out);
    writeAtomic(out, exported.body);
    writeAtomic(head, exported.head);
    const kernels = Object.entries(exported.kernels).map(([k, n]) => `${n} ${k}`).join(', ');
    process.stdout.write(
      `wrote ${out} (input_ids, attention_mask → hidden.0…hidden.${ckpt.shape.numLayers}) and ${head} (rows → logits), ${execution}: ${kernels}\n`,
    );
  },
};
