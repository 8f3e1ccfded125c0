import { MODEL_POSITIONAL_HELP } from './common-flags.js';
import { resolveModelArg } from '../testbed/testbed.js';
import { statSync } from 'node:fs';
import path from 'node:path';
import { describeModel, type ModelDescription } from '../model/describe.js';
import { loadCheckpoint } from '../model/checkpoint.js';
import { QUANTIZATION_FILE, readQuantizationInfo } from '../runtime/deploy.js';
import { parseFlags, type CommandSpec } from './flags.js';

const spec: CommandSpec = {
  name: 'inspect',
  summary: 'architecture, size on disk and in memory, layers, heads, sparsity and quantization per matrix',
  positionals: { usage: '<model-dir>', min: 1, max: 1, help: MODEL_POSITIONAL_HELP },
  flags: { json: { type: 'boolean', help: 'print the description as JSON' } },
};

function human(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(u === 0 ? 0 : 1)} ${units[u]}`;
}

function pct(x: number): string {
  return `${(100 * x).toFixed(1)}%`;
}

function print(d: ModelDescription): string {
  const s = d.shape;
  const rows: [string, string][] = [
    ['model', d.dir],
    ['architecture', `${d.architecture} (${d.family}, ${d.task})`],
    ['parameters', `${d.parameters.toLocaleString('en-US')} (${d.tensors} tensors)`],
    ['on disk', `${human(d.bytesOnDisk)} in ${d.weightFiles.length} file${d.weightFiles.length === 1 ? '' : 's'}` + (d.quantization ? ` + ${human(d.quantization.bytesOnDisk)} of integer forms (${path.basename(d.quantization.file)})` : '')],
    ['dtype', Object.entries(d.dtypes).map(([k, n]) => `${k} ×${n}`).join(', ')],
    ['in memory', `${human(d.bytesInMemory)} (float32, simulated)` + (d.quantization ? `, ${human(d.quantization.bytesDeployed)} deployed (${d.quantization.matrices} quantized matrices)` : '')],
    ['sparsity', `${pct(d.sparsity)} over ${d.matrices.length} linear maps`],
    ['layers', String(s.numLayers)],
    ['heads', s.numKvHeads === s.numHeads ? String(s.numHeads) : `${s.numHeads} query, ${s.numKvHeads} key/value`],
    ['hidden', `${s.hiddenSize} (head dim ${s.headDim}, intermediate ${s.intermediateSize})`],
    ['vocabulary', String(s.vocabSize)],
    ['max positions', String(s.maxPositions)],
    ['tokenizer', d.tokenizer],
  ];
  if (s.labels) rows.push(['labels', s.labels.join(', ')]);
  const w = Math.max(...rows.map(([k]) => k.length));
  const lines = rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`);
  const nw = Math.max(...d.matrices.map((m) => m.name.length));
  lines.push('', `${'matrix'.padEnd(nw)}  ${'shape'.padEnd(12)}  sparsity  quantized`);
  for (const m of d.matrices) {
    const q = m.bits !== undefined ? `${m.bits}-bit, group ${m.groupSize}` : '—';
    lines.push(`${m.name.padEnd(nw)}  ${m.shape.join('×').padEnd(12)}  ${pct(m.sparsity).padStart(8)}  ${q}`);
  }
  return lines.join('\n');
}

export const inspectCommand = {
  spec,
  async run(argv: string[]): Promise<void> {
    const args = parseFlags(spec, argv);
    const ckpt = loadCheckpoint((await resolveModelArg(args.positionals[0]!, { log: (l) => process.stderr.write(l + '\n') })).dir);
    const matrices = readQuantizationInfo(ckpt.dir);
    const file = path.join(ckpt.dir, QUANTIZATION_FILE);
    const d = describeModel(ckpt, matrices ? { file, bytes: statSync(file).size, matrices } : undefined);
    process.stdout.write((args.bool('json') ? JSON.stringify(d, null, 2) : print(d)) + '\n');
  },
};
