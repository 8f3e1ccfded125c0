import { resolveModel } from '../embedded.js';
import { renameSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { DikeError } from '../errors.js';
import { loadCheckpoint } from '../model/checkpoint.js';
import { exportOnnx } from '../runtime/export.js';
import { executionFlag, parsing, UsageError } from './args.js';

const usage = 'dike export <model-dir> --out model.onnx [--execution simulated|deployed] [--accuracy-level 0-4] [--int8-kernel DynamicQuantizeMatMul|MatMulInteger]';

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
  summary: 'write a model as ONNX files (body → hidden states, head → logits), simulated or on integer kernels',
  usage,
  async run(argv: string[]): Promise<void> {
    const { values, positionals } = parsing(usage, () =>
      parseArgs({
        args: argv,
        allowPositionals: true,
        strict: true,
        options: {
          out: { type: 'string' },
          execution: { type: 'string' },
          'accuracy-level': { type: 'string' },
          'int8-kernel': { type: 'string' },
        },
      }),
    );
    if (positionals.length !== 1) throw new UsageError(`expected one model directory\nusage: ${usage}`);
    if (values.out === undefined) throw new UsageError(`--out is required\nusage: ${usage}`);
    const execution = executionFlag(values.execution);
    const level = values['accuracy-level'] === undefined ? undefined : Number(values['accuracy-level']);
    if (level !== undefined && !(Number.isInteger(level) && level >= 0 && level <= 4)) throw new UsageError(`--accuracy-level expects 0…4, got "${values['accuracy-level']}"`);
    const kernel = values['int8-kernel'];
    if (kernel !== undefined && kernel !== 'DynamicQuantizeMatMul' && kernel !== 'MatMulInteger') throw new UsageError(`--int8-kernel expects DynamicQuantizeMatMul or MatMulInteger, got "${kernel}"`);
    const ckpt = loadCheckpoint(resolveModel(positionals[0]!).dir);
    const exported = exportOnnx(ckpt, {
      execution,
      deploy: { ...(level !== undefined ? { accuracyLevel: level } : {}), ...(kernel !== undefined ? { int8Kernel: kernel } : {}) },
    });
    const head = headPath(values.out);
    writeAtomic(values.out, exported.body);
    writeAtomic(head, exported.head);
    const kernels = Object.entries(exported.kernels).map(([k, n]) => `${n} ${k}`).join(', ');
    process.stdout.write(
      `wrote ${values.out} (input_ids, attention_mask → hidden.0…hidden.${ckpt.shape.numLayers}) and ${head} (rows → logits), ${execution}: ${kernels}\n`,
    );
  },
};
