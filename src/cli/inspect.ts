import { describeModel, type ModelDescription } from '../model/describe.js';
import { loadCheckpoint } from '../model/checkpoint.js';
import { parseArgs } from 'node:util';
import { parsing, UsageError } from './args.js';

const usage = 'dike inspect <model-dir> [--json]';

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

function print(d: ModelDescription): string {
  const s = d.shape;
  const rows: [string, string][] = [
    ['model', d.dir],
    ['architecture', `${d.architecture} (${d.family}, ${d.task})`],
    ['parameters', `${d.parameters.toLocaleString('en-US')} (${d.tensors} tensors)`],
    ['on disk', `${human(d.bytesOnDisk)} in ${d.weightFiles.length} file${d.weightFiles.length === 1 ? '' : 's'}`],
    ['dtype', Object.entries(d.dtypes).map(([k, n]) => `${k} ×${n}`).join(', ')],
    ['in memory', `${human(d.bytesInMemory)} (float32)`],
    ['layers', String(s.numLayers)],
    ['heads', s.numKvHeads === s.numHeads ? String(s.numHeads) : `${s.numHeads} query, ${s.numKvHeads} key/value`],
    ['hidden', `${s.hiddenSize} (head dim ${s.headDim}, intermediate ${s.intermediateSize})`],
    ['vocabulary', String(s.vocabSize)],
    ['max positions', String(s.maxPositions)],
    ['tokenizer', d.tokenizer],
  ];
  if (s.labels) rows.push(['labels', s.labels.join(', ')]);
  const w = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n');
}

export const inspectCommand = {
  summary: 'architecture, size, dtype, layers and heads of a model directory',
  usage,
  async run(argv: string[]): Promise<void> {
    const { values, positionals } = parsing(usage, () =>
      parseArgs({ args: argv, options: { json: { type: 'boolean' } }, allowPositionals: true, strict: true }),
    );
    if (positionals.length !== 1) throw new UsageError(`expected one model directory\nusage: ${usage}`);
    const d = describeModel(loadCheckpoint(positionals[0]!));
    process.stdout.write((values.json ? JSON.stringify(d, null, 2) : print(d)) + '\n');
  },
};
