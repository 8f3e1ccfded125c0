/**
 * Seeded fuzzing of every input Dikē reads: safetensors headers and data, config.json, tokenizer
 * files, recipes, CrowS-Pairs CSV rows, BBQ / classification JSONL rows and command-line flags, over
 * the shipped and shared models. The contract for each mutation: either it is accepted and every
 * number that comes out is finite, or it is refused with ONE line (a DikeError / UsageError in
 * process; one stderr line, a non-zero exit and no stack trace from the CLI), within a time bound.
 *
 * Most mutations run in process against the loaders and validators; a representative subset runs
 * the real CLI (spawned, two at a time) to check exit codes and what the user sees.
 * DIKE_FUZZ_SEED picks another seed; DIKE_FUZZ_SCALE multiplies the counts.
 */
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync, mkdirSync, readdirSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { Rng } from '../src/util/rng.js';
import { DikeError } from '../src/errors.js';
import { UsageError, parseFlags, type CommandSpec } from '../src/cli/flags.js';
import { loadCheckpoint, tensorParam, validateCheckpoint, type Checkpoint, type Param } from '../src/model/checkpoint.js';
import { parseSafetensors } from '../src/model/safetensors.js';
import { ConfigReader } from '../src/model/config.js';
import { resolveArchitecture } from '../src/model/arch/registry.js';
import { loadTokenizer } from '../src/model/tokenizer.js';
import { parseRecipe } from '../src/compress/recipe.js';
import { parseCrowsPairs } from '../src/measure/crows-pairs.js';
import { parseBbq } from '../src/measure/bbq.js';
import { readLabelled } from '../src/train/corpus.js';
import { inspectCommand } from '../src/cli/inspect.js';
import { logprobsCommand } from '../src/cli/logprobs.js';
import { measureCommand } from '../src/cli/measure.js';
import { dataCommand } from '../src/cli/data.js';
import { compressCommand } from '../src/cli/compress.js';
import { auditCommand } from '../src/cli/audit.js';
import { exportCommand } from '../src/cli/export.js';
import { distillCommand, trainCommand } from '../src/cli/train.js';
import { CLI, DATA, modelDir, repoRoot, scratchDir } from './fixtures.js';

const SEED = Number(process.env['DIKE_FUZZ_SEED'] ?? 20261207);
const SCALE = Number(process.env['DIKE_FUZZ_SCALE'] ?? 1);
const n = (k: number): number => Math.max(1, Math.round(k * SCALE));
/** In process: a loader that takes longer than this on one small input counts as a hang. */
const IN_PROCESS_MS = 10_000;
/** A spawned command (node start-up, ONNX Runtime, a tiny model): generous, to tell a hang from a slow machine. */
const SPAWN_MS = 90_000;

const rng = new Rng(SEED);
const pick = <T>(xs: readonly T[]): T => xs[rng.int(xs.length)]!;
const chance = (p: number): boolean => rng.next() < p;

/** Values that break things: wrong types, boundaries, huge, fractional, negative, empty. */
const NASTY: readonly unknown[] = [
  -1, 0, 1, 0.5, 2.5, -0.0001, 1e-12, 1e9, 1e15, 2 ** 53, -(2 ** 31), Number.MAX_SAFE_INTEGER, 3.000001,
  '', 'x', '1', '-1', 'NaN', 'Infinity', '1e999', null, true, false, [], [1, 2], {}, { a: 1 }, '\u0000', 'é'.repeat(3),
];
const NASTY_STR: readonly string[] = ['', 'x', '0', '-1', '1', '2', '0.5', '1.5', '-0.5', '1e9', '1000000000', '9'.repeat(30), 'NaN', 'Infinity', '1e999', '0x10', ' 3', '3 ', ',', '1,', ',2', '0,9', '0,1,2,3', 'a,b', '--x', '=', 'none', 'f16', 'cosine'];

function nasty(): unknown {
  return structuredClone(pick(NASTY));
}

// ---- the invariant ---------------------------------------------------------------------------------

interface Tally {
  accepted: number;
  refused: number;
}
const tally: Record<string, Tally> = {};

/** Every number in a small result is finite. */
function assertFinite(label: string, v: unknown, depth = 0): void {
  if (depth > 6) return;
  if (typeof v === 'number') assert.ok(Number.isFinite(v), `${label}: a non-finite number came out: ${v}`);
  else if (Array.isArray(v)) v.slice(0, 200).forEach((x) => assertFinite(label, x, depth + 1));
  else if (v instanceof Float32Array) assert.ok(v.every(Number.isFinite), `${label}: non-finite values`);
  else if (typeof v === 'object' && v !== null && !(v instanceof Map)) for (const x of Object.values(v).slice(0, 200)) assertFinite(label, x, depth + 1);
}

/** Contract violations of the current test, reported together (up to 12) at its end. */
let failures: string[] = [];

function reportFailures(): void {
  const f = failures;
  failures = [];
  assert.equal(f.length, 0, `${f.length} violations:\n${f.slice(0, 12).join('\n')}`);
}

/** Run one mutation in process: accepted with finite output, or refused with a one-line Dikē error. */
function outcome(kind: string, label: string, f: () => unknown): 'accepted' | 'refused' | 'violation' {
  const t = (tally[kind] ??= { accepted: 0, refused: 0 });
  const t0 = Date.now();
  let result: 'accepted' | 'refused' | 'violation';
  try {
    const r = f();
    assertFinite(label, r);
    t.accepted++;
    result = 'accepted';
  } catch (e) {
    if (e instanceof assert.AssertionError) {
      failures.push(`${kind} ${label}: ${e.message}`);
      result = 'violation';
    } else if (!(e instanceof DikeError || e instanceof UsageError)) {
      failures.push(`${kind} ${label}: not a Dikē error but ${(e as Error)?.name}: ${(e as Error)?.message ?? String(e)}`);
      result = 'violation';
    } else if (/[\r\n]/.test(e.message) || e.message.length === 0) {
      failures.push(`${kind} ${label}: the error is not one line: ${JSON.stringify(e.message)}`);
      result = 'violation';
    } else {
      t.refused++;
      result = 'refused';
    }
  }
  const ms = Date.now() - t0;
  if (ms >= IN_PROCESS_MS) failures.push(`${kind} ${label}: took ${ms} ms`);
  return result;
}

// ---- generic JSON mutation ---------------------------------------------------------------------------

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** Paths to every value of a JSON document (bounded for large ones). */
function jsonPaths(doc: Json, prefix: (string | number)[] = [], out: (string | number)[][] = [], limit = 400): (string | number)[][] {
  if (out.length >= limit) return out;
  out.push(prefix);
  if (Array.isArray(doc)) doc.slice(0, 8).forEach((x, i) => jsonPaths(x, [...prefix, i], out, limit));
  else if (doc !== null && typeof doc === 'object') for (const [k, v] of Object.entries(doc)) jsonPaths(v, [...prefix, k], out, limit);
  return out;
}

/** One structural mutation of a JSON document: replace, delete, duplicate or add a value. */
function mutateJson(doc: Json, keys: readonly string[] = []): Json {
  const copy = structuredClone(doc);
  const paths = jsonPaths(copy).filter((p) => p.length > 0);
  if (paths.length === 0) return nasty() as Json;
  const p = pick(paths);
  let parent: Json = copy;
  for (const k of p.slice(0, -1)) parent = (parent as Record<string | number, Json>)[k]!;
  const last = p.at(-1)!;
  const container = parent as Record<string | number, Json>;
  const r = rng.int(10);
  if (r < 5) container[last] = nasty() as Json;
  else if (r < 7) {
    if (Array.isArray(container)) container.splice(Number(last), 1);
    else delete container[last];
  } else if (r < 8 && keys.length > 0 && !Array.isArray(copy)) (copy as Record<string, Json>)[pick(keys)] = nasty() as Json;
  else if (typeof container[last] === 'number') container[last] = (container[last] as number) * pick([-1, 2, 1000, 0.5, 1e6]) + pick([0, 1, 0.5]);
  else container[last] = structuredClone(container[pick(Object.keys(container))] ?? null);
  return copy;
}

/** Byte-level text damage: delete, insert or flip a few characters. */
function damageText(text: string, edits = 1 + rng.int(3)): string {
  let s = text;
  for (let k = 0; k < edits; k++) {
    const i = rng.int(Math.max(1, s.length));
    const r = rng.int(4);
    if (r === 0) s = s.slice(0, i) + s.slice(i + 1 + rng.int(4));
    else if (r === 1) s = s.slice(0, i) + pick(['"', ',', '\n', '{', ']', ':', '\\', '\u0000', ' ', '9']) + s.slice(i);
    else if (r === 2) s = s.slice(0, i) + String.fromCharCode(32 + rng.int(95)) + s.slice(i + 1);
    else s = s.slice(0, i);
  }
  return s;
}

// ---- fixtures: the base inputs -------------------------------------------------------------------------

const MODELS = ['tiny-bert-mlm', 'tiny-gpt2', 'tiny-llama', 'tiny-bert-cls'];
const SHIPPED = ['dike-bert-mini', 'dike-gpt2-mini'];
const dirOf = (m: string): string => (SHIPPED.includes(m) ? path.join(repoRoot(), 'models', m) : modelDir(m));

const base = new Map<string, Checkpoint>();
let tmp = '';

before(() => {
  tmp = scratchDir('fuzz');
  for (const m of [...MODELS, ...SHIPPED]) base.set(m, loadCheckpoint(dirOf(m)));
});

/** A model directory whose files link to `model`'s except those given (written here). */
function mutatedDir(model: string, files: Record<string, string | Uint8Array>): string {
  const dir = path.join(tmp, `m${rng.nextU32().toString(36)}`);
  mkdirSync(dir);
  const src = dirOf(model);
  for (const f of readdirSync(src)) if (!(f in files) && !f.startsWith('golden') && !f.startsWith('grads')) symlinkSync(path.join(src, f), path.join(dir, f));
  for (const [f, content] of Object.entries(files)) writeFileSync(path.join(dir, f), content);
  return dir;
}

// ---- safetensors --------------------------------------------------------------------------------------

function splitSafetensors(bytes: Uint8Array): { header: Record<string, Json>; data: Uint8Array } {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  return { header: JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))) as Record<string, Json>, data: bytes.subarray(8 + n) };
}

function joinSafetensors(headerText: string, data: Uint8Array, lengthDelta = 0): Uint8Array {
  const h = new TextEncoder().encode(headerText);
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(Math.max(0, h.length + lengthDelta)), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

/** One mutation of a safetensors file: its header (structure or bytes), its length field, or its data. */
function mutateSafetensors(bytes: Uint8Array): { bytes: Uint8Array; what: string } {
  const { header, data } = splitSafetensors(bytes);
  const names = Object.keys(header).filter((k) => k !== '__metadata__');
  const r = rng.int(12);
  if (r < 5) {
    const name = pick(names);
    const entry = structuredClone(header[name]) as Record<string, Json>;
    const field = pick(['dtype', 'shape', 'data_offsets', 'extra']);
    if (field === 'dtype') entry['dtype'] = pick(['F32', 'F16', 'BF16', 'I8', 'U8', 'I64', 'BOOL', 'F64', 'f32', '', 7]) as Json;
    else if (field === 'shape') {
      const shape = [...(entry['shape'] as number[])];
      const r2 = rng.int(4);
      if (r2 === 0 && shape.length > 0) shape[rng.int(shape.length)] = pick([0, 1, -1, 2.5, 1e12, 3]);
      else if (r2 === 1) shape.push(pick([1, 2]));
      else if (r2 === 2) shape.pop();
      else shape.reverse();
      entry['shape'] = shape;
    } else if (field === 'data_offsets') {
      const [b, e] = entry['data_offsets'] as [number, number];
      entry['data_offsets'] = pick([[e, b], [b, e + 4], [b + 4, e], [b, 2 ** 53], [-1, e], [b, e, 0], [b], [b + 0.5, e]]) as Json;
    } else entry[pick(['extra', 'dtype', 'shape'])] = nasty() as Json;
    header[name] = entry;
    return { bytes: joinSafetensors(JSON.stringify(header), data), what: `${name}.${field}` };
  }
  if (r < 6) {
    header[pick([...names, '__metadata__', 'new.tensor'])] = mutateJson(header[pick(names)] as Json) as Json;
    return { bytes: joinSafetensors(JSON.stringify(header), data), what: 'entry' };
  }
  if (r < 7) return { bytes: joinSafetensors(damageText(JSON.stringify(header)), data), what: 'header bytes' };
  if (r < 8) return { bytes: joinSafetensors(JSON.stringify(header), data, pick([-1, 1, 8, -8, 1e6, 2 ** 40])), what: 'length field' };
  if (r < 9) return { bytes: bytes.subarray(0, rng.int(bytes.length)), what: 'truncated' };
  // Data: plant a NaN, an Inf or a random pattern in one float tensor.
  const name = pick(names.filter((k) => (header[k] as { dtype: string }).dtype.startsWith('F') || (header[k] as { dtype: string }).dtype === 'BF16'));
  const e = header[name] as { dtype: string; data_offsets: [number, number] };
  const copy = bytes.slice();
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const width = e.dtype === 'F32' ? 4 : 2;
  const count = (e.data_offsets[1] - e.data_offsets[0]) / width;
  const at = 8 + n + e.data_offsets[0] + width * rng.int(Math.max(1, count));
  const dv = new DataView(copy.buffer);
  const special = pick(['nan', 'inf', '-inf']);
  if (e.dtype === 'F32') dv.setFloat32(at, special === 'nan' ? NaN : special === 'inf' ? Infinity : -Infinity, true);
  else if (e.dtype === 'F16') dv.setUint16(at, special === 'nan' ? 0x7e00 : special === 'inf' ? 0x7c00 : 0xfc00, true);
  else dv.setUint16(at, special === 'nan' ? 0x7fc0 : special === 'inf' ? 0x7f80 : 0xff80, true);
  return { bytes: copy, what: `${special} in ${name}` };
}

/** What loadCheckpoint does with one weights file, in memory: parse, convert, check finite, validate. */
function checkpointWithWeights(ckpt: Checkpoint, bytes: Uint8Array, file: string): Checkpoint {
  const st = parseSafetensors(bytes, file);
  const params = new Map<string, Param>();
  for (const [name, t] of st.tensors) params.set(name, tensorParam(file, name, t));
  const c = { ...ckpt, params };
  validateCheckpoint(c);
  return c;
}

// ---- CLI flags -----------------------------------------------------------------------------------------

const SPECS: CommandSpec[] = [inspectCommand, logprobsCommand, measureCommand, dataCommand, compressCommand, auditCommand, exportCommand, trainCommand, distillCommand].map((c) => c.spec);

/** A random command line for `spec`: flags with valid-looking and nasty values, unknown flags, positionals. */
function randomArgv(spec: CommandSpec): string[] {
  const argv: string[] = [];
  const flags = Object.entries(spec.flags);
  const count = rng.int(5);
  for (let k = 0; k < count; k++) {
    const [name, f] = pick(flags);
    const r = rng.int(20);
    if (r === 0) argv.push(`--${name}-x`, 'x');
    else if (r === 1) argv.push(`-${name[0]}`);
    else if (r === 2) argv.push(`--${name}`); // value missing when one is needed
    else if (r === 3) argv.push(`--${name}=${pick(NASTY_STR)}`);
    else if (f.type === 'boolean') argv.push(`--${name}`);
    else if (f.type === 'enum' && chance(0.5)) argv.push(`--${name}`, pick(f.choices!));
    else if (f.type === 'list' && f.choices && chance(0.5)) argv.push(`--${name}`, pick(f.choices));
    else argv.push(`--${name}`, pick(NASTY_STR));
  }
  const positional = rng.int(3);
  for (let k = 0; k < positional; k++) argv.splice(rng.int(argv.length + 1), 0, pick(['model', 'list', 'fetch', 'x', '-', '--', '-5']));
  return argv;
}

// ---- data rows -----------------------------------------------------------------------------------------

const CROWS = readFileSync(path.join(repoRoot(), 'data', 'crows-pairs', 'crows_pairs_anonymized.csv'), 'utf8');
const CROWS_HEAD = (() => {
  const lines = CROWS.split('\n');
  return lines.slice(0, 13);
})();
function mutateCrows(): string {
  const lines = [...CROWS_HEAD];
  const r = rng.int(8);
  const i = 1 + rng.int(lines.length - 1);
  if (r === 0) return lines[0]! + '\n'; // only a header
  if (r === 1) lines[i] = lines[i]!.split(',').map((c) => (chance(0.3) ? pick(NASTY_STR) : c)).join(',');
  else if (r === 2) lines.splice(i, 1, lines[1]!); // duplicate index
  else if (r === 3) lines[0] = damageText(lines[0]!);
  else if (r === 4) lines[i] = lines[i]!.split(',').slice(0, 1 + rng.int(5)).join(',');
  else if (r === 5) lines[i] = lines[i]!.replace(/,stereo,|,antistereo,/, `,${pick(['', 'STEREO', 'x', 'anti'])},`);
  else return damageText(lines.join('\n'), 1 + rng.int(6));
  return lines.join('\n');
}

const BBQ = readFileSync(path.join(DATA, 'bbq', 'Age.jsonl'), 'utf8').split('\n').slice(0, 6);
function mutateBbq(): string {
  const rows = BBQ.map((l) => JSON.parse(l) as Json);
  const i = rng.int(rows.length);
  if (chance(0.7)) rows[i] = mutateJson(rows[i]!, ['label', 'answer_info', 'context', 'question', 'ans0', 'question_polarity', 'context_condition']);
  const text = rows.map((r) => JSON.stringify(r)).join('\n');
  return chance(0.25) ? damageText(text) : text;
}

function mutateLabelled(): { text: string; ext: string } {
  const ext = pick(['.jsonl', '.tsv']);
  const rows = [
    { text: 'The nurse was kind.', label: 1 },
    { text: 'The doctor was rude.', label: 0 },
    { text: 'A plain sentence.', label: 'positive' },
  ];
  const text =
    ext === '.jsonl'
      ? rows.map((r) => JSON.stringify(chance(0.5) ? mutateJson(r as unknown as Json, ['text', 'label', 'sentence']) : r)).join('\n')
      : rows.map((r) => `${chance(0.4) ? pick(NASTY_STR) : r.text}\t${chance(0.5) ? pick(NASTY_STR) : String(r.label)}`).join('\n');
  return { text: chance(0.2) ? damageText(text) : text, ext };
}

// ---- recipes ---------------------------------------------------------------------------------------------

const RECIPES: Json[] = [
  { seed: 0, steps: [{ method: 'magnitude', sparsity: 0.5, scope: { modules: ['attention', 'ffn'] } }] },
  { seed: 1, steps: [{ method: 'rtn', bits: 4, group_size: 32 }, { method: 'magnitude', sparsity: 0.3, scope: { layers: [0, 1] } }] },
  { seed: 0, calibration: { file: 'train.txt', samples: 8, seq_len: 32 }, steps: [{ method: 'gptq', bits: 4, group_size: 32, scope: { modules: ['ffn'], layers: [0] } }] },
  { steps: [{ method: 'nm', pattern: '2:4', overrides: { '*.query.weight': { pattern: '1:4' } } }] },
  { steps: [{ method: 'layers', remove: 1 }] },
];
const RECIPE_KEYS = ['seed', 'calibration', 'steps', 'method', 'sparsity', 'bits', 'group_size', 'scope', 'overrides', 'samples', 'seq_len', 'layers', 'modules'];

function mutateRecipe(): { text: string; file: string } {
  const doc = mutateJson(pick(RECIPES), RECIPE_KEYS);
  const yaml = chance(0.5);
  const text = JSON.stringify(doc, null, yaml ? 1 : undefined);
  return { text: chance(0.2) ? damageText(text) : text, file: path.join(tmp, yaml ? 'r.yaml' : 'r.json') };
}

// ---- config and tokenizer ---------------------------------------------------------------------------------

const CONFIG_KEYS = ['vocab_size', 'hidden_size', 'num_hidden_layers', 'num_attention_heads', 'num_key_value_heads', 'intermediate_size', 'max_position_embeddings', 'layer_norm_eps', 'layer_norm_epsilon', 'rms_norm_eps', 'bos_token_id', 'eos_token_id', 'pad_token_id', 'n_embd', 'n_layer', 'n_head', 'n_positions', 'n_inner', 'type_vocab_size', 'hidden_act', 'activation_function', 'rope_theta', 'tie_word_embeddings', 'architectures', 'model_type', 'head_dim', 'id2label', 'num_labels'];

function checkpointWithConfig(ckpt: Checkpoint, raw: Record<string, unknown>): Checkpoint {
  const arch = resolveArchitecture(new ConfigReader(raw, ckpt.configFile));
  const c = { ...ckpt, ...arch, rawConfig: raw };
  validateCheckpoint(c);
  return c;
}

/** Tokenizer damage: special tokens, added tokens with ids far beyond (or just past) the vocabulary, vocab lines. */
function mutateTokenizer(model: string, ckpt: Checkpoint): Record<string, string> {
  const dir = dirOf(model);
  const read = (f: string): string => readFileSync(path.join(dir, f), 'utf8');
  const r = rng.int(5);
  const tcText = (() => {
    try {
      return read('tokenizer_config.json');
    } catch {
      return '{}';
    }
  })();
  if (r <= 1) {
    const tc = JSON.parse(tcText) as Record<string, Json>;
    const id = pick([ckpt.shape.vocabSize, ckpt.shape.vocabSize + 7, 1e9, 2 ** 31, 4194303, -3, 1.5]);
    tc['added_tokens_decoder'] = { ...((tc['added_tokens_decoder'] as Record<string, Json>) ?? {}), [String(id)]: { content: '<fuzz>', special: true } };
    return { 'tokenizer_config.json': JSON.stringify(tc) };
  }
  if (r === 2) return { 'tokenizer_config.json': JSON.stringify(mutateJson(JSON.parse(tcText) as Json, ['bos_token', 'eos_token', 'unk_token', 'mask_token', 'pad_token', 'model_max_length', 'add_bos_token', 'added_tokens_decoder'])) };
  if (r === 3) {
    try {
      return { 'special_tokens_map.json': JSON.stringify(mutateJson(JSON.parse(read('special_tokens_map.json')) as Json, ['bos_token', 'mask_token', 'additional_special_tokens'])) };
    } catch {
      return { 'special_tokens_map.json': '{"mask_token": 5}' };
    }
  }
  if (ckpt.tokenizer.kind === 'wordpiece') {
    const lines = read('vocab.txt').split('\n');
    if (chance(0.5)) lines.push(...Array.from({ length: 3 + rng.int(50) }, (_, k) => `fuzz${k}`));
    else lines.splice(rng.int(lines.length), 1 + rng.int(5));
    return { 'vocab.txt': lines.join('\n') };
  }
  if (ckpt.tokenizer.kind === 'tokenizer.json') {
    const tj = JSON.parse(read('tokenizer.json')) as { model: { vocab: Record<string, Json> } };
    tj.model.vocab[pick(['fuzz', '▁the', '<unk>'])] = pick([1e9, ckpt.shape.vocabSize, -1, 2.5, 'x', 3]) as Json;
    return { 'tokenizer.json': JSON.stringify(tj) };
  }
  const vocab = JSON.parse(read('vocab.json')) as Record<string, Json>;
  vocab[pick(['fuzz', 'Ġthe', 'hello'])] = pick([1e9, ckpt.shape.vocabSize, ckpt.shape.vocabSize + 1, -1, 0.5, 'x', 5]) as Json;
  return { 'vocab.json': JSON.stringify(vocab) };
}

// ---- the in-process suite ---------------------------------------------------------------------------------

describe(`fuzzing in process (seed ${SEED})`, () => {
  it(`safetensors: ${n(500)} header, length, truncation and NaN/Inf mutations over ${MODELS.length + SHIPPED.length} models`, () => {
    const files = new Map<string, Uint8Array>();
    const models = [...MODELS, ...SHIPPED].filter((m) => m !== 'tiny-llama'); // tiny-llama is sharded: its shards below
    for (let k = 0; k < n(500); k++) {
      const model = pick(models);
      const file = path.join(dirOf(model), 'model.safetensors');
      const bytes = files.get(file) ?? readFileSync(file);
      files.set(file, bytes);
      const m = mutateSafetensors(bytes);
      const r = outcome('safetensors', `${model} ${m.what}`, () => {
        checkpointWithWeights(base.get(model)!, m.bytes, file);
      });
      if (/^(nan|inf|-inf) in /.test(m.what) && r === 'accepted') failures.push(`${model}: ${m.what} was accepted`);
    }
    reportFailures();
  });

  it(`config.json: ${n(500)} mutations, each checked as loadCheckpoint checks it`, () => {
    for (let k = 0; k < n(500); k++) {
      const model = pick([...MODELS, ...SHIPPED]);
      const ckpt = base.get(model)!;
      const raw = chance(0.3)
        ? { ...ckpt.rawConfig, [pick(['bos_token_id', 'pad_token_id', 'eos_token_id', 'layer_norm_eps', 'rms_norm_eps', 'layer_norm_epsilon'])]: pick([0.5, -1e-5, 0, ckpt.shape.vocabSize, 1e9, 2.5, -2, 'x']) }
        : (mutateJson(ckpt.rawConfig as Json, CONFIG_KEYS) as Record<string, unknown>);
      outcome('config', `${model} ${JSON.stringify(raw).slice(0, 80)}`, () => {
        const c = checkpointWithConfig(ckpt, raw);
        return c.shape;
      });
    }
    reportFailures();
  });

  it(`tokenizer files: ${n(60)} mutations (ids far beyond and just past the vocabulary, special tokens, vocab lines)`, () => {
    for (let k = 0; k < n(60); k++) {
      const model = pick(['tiny-bert-mlm', 'tiny-bert-cls', 'dike-bert-mini', 'tiny-llama', 'tiny-gpt2']);
      const ckpt = base.get(model)!;
      const files = mutateTokenizer(model, ckpt);
      const dir = mutatedDir(model, files);
      outcome('tokenizer', `${model} ${Object.keys(files).join(',')}`, () => {
        const tokenizer = loadTokenizer(dir);
        validateCheckpoint({ ...ckpt, tokenizer });
        return tokenizer.encode('The nurse said that she was tired.').ids;
      });
    }
    reportFailures();
  });

  it(`recipes: ${n(400)} mutations of YAML/JSON recipes`, () => {
    for (let k = 0; k < n(400); k++) {
      const { text, file } = mutateRecipe();
      outcome('recipe', text.slice(0, 80), () => parseRecipe(text, file).steps.length);
    }
    reportFailures();
  });

  it(`data rows: ${n(300)} CrowS-Pairs CSV, ${n(200)} BBQ JSONL and ${n(100)} classification rows`, () => {
    for (let k = 0; k < n(300); k++) {
      const text = mutateCrows();
      const r = outcome('crows-csv', text.slice(0, 60), () => parseCrowsPairs(text, 'crows.csv').map((p) => p.index));
      if (text.trim().split('\n').length === 1 && r === 'accepted') failures.push('a header-only CSV was accepted');
    }
    for (let k = 0; k < n(200); k++) {
      const text = mutateBbq();
      outcome('bbq-jsonl', text.slice(0, 60), () => parseBbq(text, 'Age.jsonl', 'Age').length);
    }
    for (let k = 0; k < n(100); k++) {
      const { text, ext } = mutateLabelled();
      const file = path.join(tmp, `labelled${k}${ext}`);
      writeFileSync(file, text);
      outcome('labelled', text.slice(0, 60), () => readLabelled(file, ['negative', 'positive']).map((x) => x.label));
    }
    reportFailures();
  });

  it(`CLI flags: ${n(600)} command lines parsed against every command's table`, () => {
    for (let k = 0; k < n(600); k++) {
      const spec = pick(SPECS);
      const argv = randomArgv(spec);
      outcome('flags', `dike ${spec.name} ${argv.join(' ')}`, () => parseFlags(spec, argv).values);
    }
    reportFailures();
  });

  it('counts', () => {
    const total = Object.values(tally).reduce((s, t) => s + t.accepted + t.refused, 0);
    console.log(`fuzz (seed ${SEED}): ${total} in-process mutations`, JSON.stringify(tally));
    if (SCALE >= 1) assert.ok(total >= 2000, `only ${total} mutations`);
    for (const [k, t] of Object.entries(tally)) assert.ok(t.refused > 0, `${k}: no mutation was refused (the fuzzer does not reach the checks)`);
  });
});

// ---- the CLI, spawned ---------------------------------------------------------------------------------------

interface Spawned {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
  killed: boolean;
}

function run(args: string[]): Promise<Spawned> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, DIKE_DEBUG: '', DIKE_DATA: '' }, cwd: tmp, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let killed = false;
    const timer = setTimeout(() => {
      killed = true;
      child.kill('SIGKILL');
    }, SPAWN_MS);
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: Date.now() - t0, killed });
    });
  });
}

/** The user's view: exit 0 with finite numbers in the JSON, or one stderr line, non-zero exit, no trace. */
function assertCli(label: string, r: Spawned, json: boolean): 'accepted' | 'refused' {
  assert.ok(!r.killed, `${label}: no answer in ${SPAWN_MS} ms (a hang)`);
  if (r.code === 0) {
    if (json) assertFinite(label, JSON.parse(r.stdout));
    return 'accepted';
  }
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `${label}: one line on stderr, got ${JSON.stringify(r.stderr.slice(0, 600))}`);
  assert.match(lines[0]!, /^dike/, `${label}: ${lines[0]}`);
  assert.doesNotMatch(r.stderr, /\n\s+at |internal error/, `${label}: ${r.stderr}`);
  assert.ok(r.code === 1 || r.code === 2, `${label}: exit code ${r.code}`);
  return 'refused';
}

describe(`fuzzing the CLI (seed ${SEED}, spawned)`, () => {
  it(`${n(150)} command lines: flags, damaged models, token ids beyond the vocabulary, CSV rows, recipes`, { timeout: 600_000 }, async () => {
    const jobs: { label: string; args: string[]; json: boolean; mustRefuse?: boolean; pair?: string }[] = [];
    const pairs = new Map<string, { inspect?: Spawned; logprobs?: Spawned }>();
    const crowsData = (csv: string): string => {
      const d = path.join(tmp, `data${rng.nextU32().toString(36)}`, 'crows-pairs');
      mkdirSync(d, { recursive: true });
      writeFileSync(path.join(d, 'crows_pairs_anonymized.csv'), csv);
      return path.dirname(d);
    };
    // Flags: fast commands with random flags; slow ones (train, audit, distill) with one bad value
    // at the end so that they must refuse before doing anything.
    for (let k = 0; k < n(45); k++) {
      const spec = pick(SPECS);
      const argv = randomArgv(spec);
      const fast = ['inspect', 'logprobs', 'export'].includes(spec.name);
      const model = pick(['tiny-bert-mlm', 'tiny-gpt2', 'dike-bert-mini']);
      if (spec.name === 'data') argv.push('--data', path.join(tmp, 'no-such-dir'));
      if (spec.name === 'export') argv.push('--out', path.join(tmp, `e${k}.onnx`));
      const bad = !fast ? ['--seed', pick(['x', '-1', '1.5', '']), '--threads', '0'] : [];
      jobs.push({ label: 'flags', args: [spec.name, ...(fast || spec.name !== 'audit' ? [dirOf(model)] : []), ...argv, ...bad], json: false, mustRefuse: !fast });
    }
    // Damaged models through inspect and logprobs (the same directory through both: they share one
    // validation, so logprobs may refuse beyond inspect only for scoring needs, not for the files).
    for (let k = 0; k < n(25); k++) {
      const model = pick(['tiny-bert-mlm', 'tiny-gpt2', 'dike-bert-mini']);
      const ckpt = base.get(model)!;
      const r = rng.int(3);
      const files: Record<string, string | Uint8Array> =
        r === 0
          ? { 'config.json': JSON.stringify(chance(0.5) ? mutateJson(ckpt.rawConfig as Json, CONFIG_KEYS) : { ...ckpt.rawConfig, [pick(['bos_token_id', 'layer_norm_eps', 'layer_norm_epsilon', 'pad_token_id'])]: pick([0.5, -1e-6, 1e9, -5]) }) }
          : r === 1
            ? { 'model.safetensors': mutateSafetensors(readFileSync(path.join(dirOf(model), 'model.safetensors'))).bytes }
            : mutateTokenizer(model, ckpt);
      const dir = mutatedDir(model, files);
      jobs.push({ label: `inspect ${model} ${Object.keys(files)}`, args: ['inspect', dir, '--json'], json: true, pair: dir });
      jobs.push({ label: `logprobs ${model} ${Object.keys(files)}`, args: ['logprobs', dir, '--json', '--text', 'The nurse said that she was tired.', '--text', 'fuzz <fuzz> hello'], json: true, pair: dir });
    }
    // A tokenizer larger than the embedding: refused naming the tokenizer, before ONNX Runtime.
    for (let k = 0; k < n(10); k++) {
      const model = pick(['tiny-gpt2', 'tiny-bert-mlm']);
      const ckpt = base.get(model)!;
      const extra: Record<string, string> = ckpt.tokenizer.kind === 'wordpiece'
        ? { 'vocab.txt': readFileSync(path.join(dirOf(model), 'vocab.txt'), 'utf8').trimEnd() + '\n' + Array.from({ length: 1 + rng.int(20) }, (_, i) => `zzfuzz${i}`).join('\n') + '\n' }
        : { 'vocab.json': JSON.stringify({ ...(JSON.parse(readFileSync(path.join(dirOf(model), 'vocab.json'), 'utf8')) as object), zzfuzz: ckpt.shape.vocabSize + rng.int(1000) }) };
      jobs.push({ label: `vocab beyond ${model}`, args: ['logprobs', mutatedDir(model, extra), '--text', 'zzfuzz0 zzfuzz'], json: false, mustRefuse: true });
    }
    // CrowS rows through measure.
    for (let k = 0; k < n(25); k++) {
      const csv = mutateCrows();
      jobs.push({ label: `crows ${csv.slice(0, 40)}`, args: ['measure', dirOf('tiny-bert-mlm'), '--data', crowsData(csv), '--limit', '8', '--resamples', '1000', '--json', '--quiet'], json: true, ...(csv.trim().split('\n').length === 1 ? { mustRefuse: true } : {}) });
    }
    // Recipes through compress (magnitude and rtn only: fast).
    for (let k = 0; k < n(20); k++) {
      const doc = mutateJson(pick(RECIPES.slice(0, 2)), RECIPE_KEYS);
      const file = path.join(tmp, `recipe${k}.${chance(0.5) ? 'yaml' : 'json'}`);
      writeFileSync(file, JSON.stringify(doc));
      jobs.push({ label: `recipe ${JSON.stringify(doc).slice(0, 60)}`, args: ['compress', dirOf('tiny-bert-mlm'), '--recipe', file, '--out', path.join(tmp, `c${k}`)], json: false });
    }
    const results: Record<string, number> = { accepted: 0, refused: 0 };
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < jobs.length) {
        const job = jobs[next++]!;
        const r = await run(job.args);
        const label = `${job.label}: dike ${job.args.join(' ').slice(0, 300)}`;
        if (r.ms > 20_000) console.log(`fuzz: slow (${r.ms} ms): ${label}`);
        const o = assertCli(label, r, job.json);
        if (job.mustRefuse) assert.equal(o, 'refused', `${label}: accepted`);
        results[o]!++;
        if (job.pair !== undefined) {
          const p = pairs.get(job.pair) ?? {};
          p[job.args[0] as 'inspect' | 'logprobs'] = r;
          pairs.set(job.pair, p);
        }
      }
    };
    await Promise.all([worker(), worker()]);
    for (const [dir, p] of pairs) {
      if (p.inspect?.code === 0 && p.logprobs !== undefined && p.logprobs.code !== 0) {
        assert.doesNotMatch(p.logprobs.stderr, /model\.safetensors|config\.json|vocab|tokenizer/, `${dir}: inspect accepts a checkpoint that logprobs refuses: ${p.logprobs.stderr}`);
      }
    }
    console.log(`fuzz CLI (seed ${SEED}): ${jobs.length} runs`, JSON.stringify(results));
    assert.ok(results['refused']! > 0 && results['accepted']! > 0);
  });
});
