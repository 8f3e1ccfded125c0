import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

import { DikeError } from '../src/errors.js';
import {
  DTYPE_BYTES,
  type DType,
  type RawTensor,
  f32BitsToBF16,
  f32BitsToF16,
  fromFloat32,
  parseSafetensors,
  readSafetensors,
  serializeSafetensors,
  tensorByteLength,
  tensorFromTyped,
  toFloat32,
  writeSafetensors,
} from '../src/model/safetensors.js';

function findRepoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!fs.existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error('no package.json above the test file');
    dir = up;
  }
  return dir;
}
const repoRoot = findRepoRoot();
const shared = path.resolve(repoRoot, '..', 'shared');
const models = path.join(shared, 'models');

/** Bits of a float32, and back. */
function bitsOf(x: number): number {
  return new Uint32Array(new Float32Array([x]).buffer)[0]!;
}
function floatOf(bits: number): number {
  return new Float32Array(new Uint32Array([bits >>> 0]).buffer)[0]!;
}
function halfBytes(bits: number[]): Uint8Array {
  return new Uint8Array(new Uint16Array(bits).buffer);
}

/** A file from a header given as text and a data section. */
function fileWith(header: string, data: Uint8Array = new Uint8Array(0), declaredLength?: bigint): Uint8Array {
  const h = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, declaredLength ?? BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

function expectDikeError(fn: () => unknown, place: string, problem: RegExp, file = 'x.safetensors'): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof DikeError, `expected DikeError, got ${String(e)}`);
    assert.equal(e.file, file);
    assert.equal(e.place, place);
    assert.match(e.problem, problem);
    return true;
  });
}

function assertSameTensors(a: Map<string, RawTensor>, b: Map<string, RawTensor>): void {
  assert.deepEqual([...a.keys()], [...b.keys()]);
  for (const [name, t] of a) {
    const u = b.get(name)!;
    assert.equal(u.dtype, t.dtype, name);
    assert.deepEqual(u.shape, t.shape, name);
    assert.ok(Buffer.from(u.bytes).equals(Buffer.from(t.bytes)), `bytes of ${name}`);
  }
}

/** Deterministic PRNG (mulberry32). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The largest finite bfloat16, (2 - 2^-7) * 2^127. */
const BF16_MAX = (2 - 2 ** -7) * 2 ** 127;

/** One tensor of every dtype, plus a scalar and an empty tensor. */
function everyDtype(): [string, RawTensor][] {
  return [
    ['f32', tensorFromTyped(new Float32Array([1.5, -2, 0, 3.25, Infinity, -0]), [2, 3])],
    ['f16', fromFloat32(new Float32Array([1, -2, 0.5, 65504, -Infinity, 2 ** -24]), [3, 2], 'F16')],
    ['bf16', fromFloat32(new Float32Array([1, -2, 0.5, BF16_MAX, Infinity, 1.25]), [6], 'BF16')],
    ['i8', tensorFromTyped(new Int8Array([-128, -1, 0, 1, 127]), [5])],
    ['u8', tensorFromTyped(new Uint8Array([0, 1, 128, 255]), [2, 2])],
    ['i32', tensorFromTyped(new Int32Array([-2147483648, -1, 0, 2147483647]), [4, 1])],
    ['i64', tensorFromTyped(new BigInt64Array([-(2n ** 40n), -1n, 0n, 2n ** 40n]), [1, 4])],
    ['bool', tensorFromTyped(new Uint8Array([1, 0, 0, 1, 1, 1]), [3, 2], 'BOOL')],
    ['scalar', tensorFromTyped(new Float32Array([42]), [])],
    ['empty', tensorFromTyped(new Float32Array(0), [0, 4])],
    ['empty_i64', tensorFromTyped(new BigInt64Array(0), [4, 0, 2])],
  ];
}

describe('round trip', () => {
  test('every dtype, a scalar and empty tensors survive serialize -> parse', () => {
    const tensors = everyDtype();
    const bytes = serializeSafetensors(tensors);
    const file = parseSafetensors(bytes, 'mem');
    assert.equal(file.file, 'mem');
    assert.deepEqual(file.metadata, { format: 'pt' });
    assertSameTensors(new Map(tensors), file.tensors);
    const got = (name: string) => Array.from(toFloat32(file.tensors.get(name)!));
    assert.deepEqual(got('f32'), [1.5, -2, 0, 3.25, Infinity, -0]);
    assert.deepEqual(got('f16'), [1, -2, 0.5, 65504, -Infinity, 2 ** -24]);
    assert.deepEqual(got('bf16'), [1, -2, 0.5, BF16_MAX, Infinity, 1.25]);
    assert.deepEqual(got('i8'), [-128, -1, 0, 1, 127]);
    assert.deepEqual(got('u8'), [0, 1, 128, 255]);
    assert.deepEqual(got('i32'), [-2147483648, -1, 0, 2 ** 31]); // 2^31 - 1 rounds to 2^31 in float32
    assert.deepEqual(got('i64'), [-(2 ** 40), -1, 0, 2 ** 40]);
    assert.deepEqual(got('bool'), [1, 0, 0, 1, 1, 1]);
    assert.deepEqual(got('scalar'), [42]);
    assert.deepEqual(file.tensors.get('scalar')!.shape, []);
    assert.deepEqual(got('empty'), []);
    assert.deepEqual(file.tensors.get('empty')!.shape, [0, 4]);
    assert.deepEqual(file.tensors.get('empty_i64')!.shape, [4, 0, 2]);
    for (const [, t] of file.tensors) assert.equal(t.bytes.length, tensorByteLength(t.dtype, t.shape));
  });

  test('the writer is deterministic, keeps the given order and pads the header to 8 bytes', () => {
    const tensors = everyDtype();
    const a = serializeSafetensors(tensors);
    const b = serializeSafetensors(everyDtype());
    assert.ok(Buffer.from(a).equals(Buffer.from(b)));
    const n = Number(new DataView(a.buffer, a.byteOffset).getBigUint64(0, true));
    assert.equal(n % 8, 0);
    const header = new TextDecoder().decode(a.subarray(8, 8 + n));
    assert.match(header, /^\{"__metadata__":\{"format":"pt"\},"f32":\{"dtype":"F32","shape":\[2,3\],"data_offsets":\[0,24\]\}/);
    assert.match(header, /\} *$/);
    // header order = given order, offsets contiguous
    const parsed = JSON.parse(header) as Record<string, { data_offsets: [number, number] }>;
    const names = Object.keys(parsed).filter((k) => k !== '__metadata__');
    assert.deepEqual(names, tensors.map(([k]) => k));
    let at = 0;
    for (const name of names) {
      assert.equal(parsed[name]!.data_offsets[0], at);
      at = parsed[name]!.data_offsets[1];
    }
    assert.equal(8 + n + at, a.length);
    // reversed input gives reversed layout
    const rev = parseSafetensors(serializeSafetensors(tensors.slice().reverse()), 'rev');
    assert.deepEqual([...rev.tensors.keys()], names.slice().reverse());
  });

  test('metadata: default, custom, empty, and an empty file', () => {
    const t: [string, RawTensor][] = [['w', tensorFromTyped(new Float32Array([1, 2]), [2])]];
    assert.deepEqual(parseSafetensors(serializeSafetensors(t, { format: 'pt', note: 'é ✓ "q"' }), 'm').metadata, {
      format: 'pt',
      note: 'é ✓ "q"',
    });
    assert.deepEqual(parseSafetensors(serializeSafetensors(t, {}), 'm').metadata, {});
    const none = parseSafetensors(serializeSafetensors([]), 'm');
    assert.equal(none.tensors.size, 0);
    assert.deepEqual(none.metadata, { format: 'pt' });
    // a header with no __metadata__ at all gives {}
    assert.deepEqual(parseSafetensors(fileWith('{}'), 'm').metadata, {});
  });

  test('the writer refuses bad tensors', () => {
    const ok = tensorFromTyped(new Float32Array([1, 2]), [2]);
    assert.throws(() => serializeSafetensors([['a', ok], ['a', ok]]), /tensor name given twice/);
    assert.throws(() => serializeSafetensors([['__metadata__', ok]]), /reserved/);
    assert.throws(() => serializeSafetensors([['a', { ...ok, shape: [3] }]]), /needs 12 bytes but the tensor holds 8/);
    assert.throws(() => serializeSafetensors([['a', { ...ok, dtype: 'F64' as DType }]]), /unsupported dtype "F64"/);
    assert.throws(() => serializeSafetensors([['a', { ...ok, shape: [-2] }]]), /non-negative integers/);
    assert.throws(() => serializeSafetensors([['a', ok]], { n: 1 as unknown as string }), /must be a string/);
  });

  test('write to disk atomically and read back; missing files are named', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dike-st-'));
    try {
      const p = path.join(dir, 'model.safetensors');
      writeSafetensors(p, everyDtype(), { format: 'pt', by: 'test' });
      writeSafetensors(p, everyDtype(), { format: 'pt', by: 'test' }); // overwrite in place
      assert.deepEqual(fs.readdirSync(dir), ['model.safetensors']); // no temporary left behind
      const back = readSafetensors(p);
      assert.equal(back.file, p);
      assert.deepEqual(back.metadata, { format: 'pt', by: 'test' });
      assertSameTensors(new Map(everyDtype()), back.tensors);
      assert.ok(Buffer.from(fs.readFileSync(p)).equals(Buffer.from(serializeSafetensors(everyDtype(), { format: 'pt', by: 'test' }))));

      const missing = path.join(dir, 'nope.safetensors');
      expectDikeError(() => readSafetensors(missing), '', /no such file/, missing);
      expectDikeError(() => readSafetensors(dir), '', /directory/, dir);
      const wrong = path.join(dir, 'wrong.safetensors');
      const short: RawTensor = { dtype: 'F32', shape: [3], bytes: new Uint8Array(8) };
      expectDikeError(() => writeSafetensors(wrong, [['w', short]]), 'tensor "w"', /needs 12 bytes/, wrong);
      assert.deepEqual(fs.readdirSync(dir), ['model.safetensors']); // nothing written
      const bad = path.join(dir, 'no-such-dir', 'x.safetensors');
      expectDikeError(() => writeSafetensors(bad, everyDtype()), '', /cannot write/, bad);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('real checkpoints', () => {
  const cases: {
    file: string;
    dtype: DType;
    count: number;
    shapes: Record<string, number[]>;
    probe: string;
    first: number[];
    sum: number;
  }[] = [
    {
      file: 'tiny-bert-mlm/model.safetensors',
      dtype: 'F32',
      count: 42,
      shapes: {
        'bert.embeddings.word_embeddings.weight': [30522, 64],
        'bert.embeddings.position_embeddings.weight': [512, 64],
        'bert.embeddings.LayerNorm.weight': [64],
      },
      probe: 'bert.embeddings.LayerNorm.weight',
      first: [0.832273006439209, 0.8325077295303345, 0.9793561100959778, 0.9807484149932861],
      sum: 62.438893139362335,
    },
    {
      file: 'tiny-gpt2/model.safetensors',
      dtype: 'F16',
      count: 28,
      shapes: { 'transformer.h.0.attn.c_attn.weight': [64, 192], 'transformer.h.0.attn.c_attn.bias': [192] },
      probe: 'transformer.h.0.attn.c_attn.bias',
      first: [-0.018341064453125, -0.038482666015625, 0.03399658203125, 0.014312744140625],
      sum: 0.342771053314209,
    },
    {
      file: 'tiny-llama/model-00001-of-00002.safetensors',
      dtype: 'BF16',
      count: 10,
      shapes: { 'model.embed_tokens.weight': [50257, 64], 'model.layers.0.mlp.down_proj.weight': [64, 160] },
      probe: 'model.layers.0.input_layernorm.weight',
      first: [0.9765625, 1.125, 1.0234375, 1.15625],
      sum: 64.2109375,
    },
  ];
  for (const c of cases) {
    test(c.file, () => {
      const p = path.join(models, c.file);
      const st = readSafetensors(p);
      assert.equal(st.tensors.size, c.count);
      assert.deepEqual(st.metadata, { format: 'pt' });
      for (const [name, shape] of Object.entries(c.shapes)) assert.deepEqual(st.tensors.get(name)?.shape, shape, name);
      for (const [name, t] of st.tensors) {
        assert.equal(t.dtype, c.dtype, name);
        assert.equal(t.bytes.length, tensorByteLength(t.dtype, t.shape), name);
      }
      const probe = toFloat32(st.tensors.get(c.probe)!);
      assert.deepEqual(Array.from(probe.subarray(0, 4)), c.first);
      const sum = probe.reduce((s, v) => s + v, 0);
      assert.ok(Math.abs(sum - c.sum) < 1e-9 * Math.max(1, Math.abs(c.sum)), `sum ${sum} vs ${c.sum}`);
      // The whole file converts, and every value is finite.
      for (const [name, t] of st.tensors) assert.ok(toFloat32(t).every(Number.isFinite), name);

      // Written back, the file is byte-identical (same layout as the Hugging Face writer) and re-parses to the same tensors.
      const again = serializeSafetensors(st.tensors, st.metadata);
      const original = fs.readFileSync(p);
      assert.ok(original.equals(Buffer.from(again)), 'byte-identical rewrite');
      assertSameTensors(st.tensors, parseSafetensors(again, 'again').tensors);
    });
  }

  test('tensors are views into the file bytes, and unaligned views still convert', () => {
    const p = path.join(models, 'tiny-gpt2/model.safetensors');
    const raw = fs.readFileSync(p);
    const st = parseSafetensors(raw, p);
    const t = st.tensors.get('transformer.h.0.attn.c_attn.weight')!;
    assert.equal(t.bytes.buffer, raw.buffer);
    // shift the whole file by 1..3 bytes so that every tensor is misaligned
    for (const shift of [1, 2, 3]) {
      const shifted = new Uint8Array(raw.length + shift);
      shifted.set(raw, shift);
      const s = parseSafetensors(shifted.subarray(shift), p);
      for (const [name, u] of s.tensors) {
        assert.deepEqual(toFloat32(u), toFloat32(st.tensors.get(name)!), name);
      }
    }
    // F32 and BF16 files too
    for (const f of ['tiny-bert-mlm/model.safetensors', 'tiny-llama/model-00001-of-00002.safetensors']) {
      const bytes = fs.readFileSync(path.join(models, f));
      const base = parseSafetensors(bytes, f);
      const shifted = new Uint8Array(bytes.length + 1);
      shifted.set(bytes, 1);
      const s = parseSafetensors(shifted.subarray(1), f);
      for (const [name, u] of s.tensors) assert.deepEqual(toFloat32(u), toFloat32(base.tensors.get(name)!), name);
    }
  });

  test('toFloat32 returns a copy, never a view of the tensor', () => {
    const t = tensorFromTyped(new Float32Array([1, 2, 3]), [3]);
    const f = toFloat32(t);
    f[0] = 99;
    assert.deepEqual(Array.from(toFloat32(t)), [1, 2, 3]);
  });
});

describe('F16 and BF16 conversion', () => {
  test('F16 known answers, both ways', () => {
    const known: [number, number][] = [
      [0x3c00, 1],
      [0xc000, -2],
      [0x0000, 0],
      [0x8000, -0],
      [0x3555, 0.333251953125],
      [0x7bff, 65504],
      [0xfbff, -65504],
      [0x0400, 2 ** -14], // smallest normal
      [0x03ff, 1023 * 2 ** -24], // largest subnormal
      [0x0001, 2 ** -24], // smallest subnormal
      [0x8001, -(2 ** -24)],
      [0x7c00, Infinity],
      [0xfc00, -Infinity],
    ];
    const decoded = toFloat32({ dtype: 'F16', shape: [known.length], bytes: halfBytes(known.map(([h]) => h)) });
    known.forEach(([h, v], i) => {
      assert.ok(Object.is(decoded[i], v), `0x${h.toString(16)} -> ${decoded[i]}, want ${v}`);
      assert.equal(f32BitsToF16(bitsOf(v)), h, `${v} -> 0x${h.toString(16)}`);
    });
    const nan = toFloat32({ dtype: 'F16', shape: [2], bytes: halfBytes([0x7e00, 0xfc01]) });
    assert.ok(Number.isNaN(nan[0]) && Number.isNaN(nan[1]));
    const h = f32BitsToF16(bitsOf(NaN));
    assert.equal(h & 0x7c00, 0x7c00);
    assert.notEqual(h & 0x3ff, 0);
  });

  test('F16 rounding: nearest, ties to even, overflow and underflow', () => {
    const f16 = (x: number) => f32BitsToF16(bitsOf(x));
    // spacing of halves in [1, 2) is 2^-10
    assert.equal(f16(1 + 2 ** -11), 0x3c00); // halfway 1 and 1+2^-10: ties to even (1.0)
    assert.equal(f16(1 + 3 * 2 ** -11), 0x3c02); // halfway 1+2^-10 (odd) and 1+2^-9: ties to even (up)
    assert.equal(f16(1 + 2 ** -11 + 2 ** -20), 0x3c01); // just above halfway: up
    assert.equal(f16(1 + 2 ** -11 - 2 ** -23), 0x3c00); // just below halfway: down
    assert.equal(f16(65519), 0x7bff); // below the halfway point 65520: stays 65504
    assert.equal(f16(65520), 0x7c00); // halfway to 65536: ties to even = Inf
    assert.equal(f16(1e6), 0x7c00);
    assert.equal(f16(-1e6), 0xfc00);
    assert.equal(f16(2 ** -25), 0x0000); // halfway between 0 and 2^-24: ties to 0
    assert.equal(f16(-(2 ** -25)), 0x8000);
    assert.equal(f16(2 ** -25 + 2 ** -40), 0x0001); // just above: smallest subnormal
    assert.equal(f16(3 * 2 ** -25), 0x0002); // halfway 1 and 2 subnormal steps: to even (2)
    assert.equal(f16(5 * 2 ** -25), 0x0002); // halfway 2 and 3: to even (2)
    assert.equal(f16(2 ** -14 - 2 ** -25), 0x0400); // halfway largest subnormal (odd) and smallest normal: up
    assert.equal(f16(1e-10), 0x0000);
  });

  test('BF16 known answers and rounding', () => {
    const bf = (x: number) => f32BitsToBF16(bitsOf(x));
    assert.equal(bf(1), 0x3f80);
    assert.equal(bf(-2), 0xc000);
    assert.equal(bf(Infinity), 0x7f80);
    assert.equal(bf(-Infinity), 0xff80);
    assert.equal(bf(-0), 0x8000);
    // spacing in [1, 2) is 2^-7
    assert.equal(bf(1 + 2 ** -8), 0x3f80); // tie, to even (down)
    assert.equal(bf(1 + 3 * 2 ** -8), 0x3f82); // tie, to even (up)
    assert.equal(bf(1 + 2 ** -8 + 2 ** -20), 0x3f81); // above the tie: up
    assert.equal(bf(3.4028234663852886e38), 0x7f80); // float32 max rounds to Inf
    assert.equal(bf(floatOf(0x7f7f7fff)), 0x7f7f); // just below the tie stays finite
    assert.equal(bf(floatOf(0x00000001)), 0x0000); // float32 smallest subnormal
    const nanBits = f32BitsToBF16(0x7f800001); // signalling NaN whose payload is all in the low bits
    assert.ok(Number.isNaN(floatOf(nanBits << 16)));
    const decoded = toFloat32({ dtype: 'BF16', shape: [4], bytes: halfBytes([0x3f80, 0xc000, 0x7f80, 0x7fc0]) });
    assert.deepEqual(Array.from(decoded.subarray(0, 3)), [1, -2, Infinity]);
    assert.ok(Number.isNaN(decoded[3]));
  });

  test('F16 -> float32 -> F16 is the identity on all 65,536 bit patterns', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const wide = toFloat32({ dtype: 'F16', shape: [65536], bytes: new Uint8Array(all.buffer) });
    const back = new Uint16Array(fromFloat32(wide, [65536], 'F16').bytes.slice().buffer);
    let nans = 0;
    for (let i = 0; i < 65536; i++) {
      const isNaN16 = (i & 0x7c00) === 0x7c00 && (i & 0x3ff) !== 0;
      if (isNaN16) {
        nans++;
        assert.ok(Number.isNaN(wide[i]), `0x${i.toString(16)} widens to NaN`);
        assert.ok((back[i]! & 0x7c00) === 0x7c00 && (back[i]! & 0x3ff) !== 0, `0x${i.toString(16)} stays NaN`);
      } else if (back[i] !== i) {
        assert.fail(`0x${i.toString(16)} -> ${wide[i]} -> 0x${back[i]!.toString(16)}`);
      }
    }
    assert.equal(nans, 2046);
  });

  test('BF16 -> float32 -> BF16 is the identity on all 65,536 bit patterns', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const wide = toFloat32({ dtype: 'BF16', shape: [65536], bytes: new Uint8Array(all.buffer) });
    const back = new Uint16Array(fromFloat32(wide, [65536], 'BF16').bytes.slice().buffer);
    for (let i = 0; i < 65536; i++) {
      if ((i & 0x7f80) === 0x7f80 && (i & 0x7f) !== 0) assert.ok(Number.isNaN(wide[i]));
      else assert.equal(back[i], i);
    }
  });

  test('tensorFromTyped converts between dtypes and refuses what does not fit', () => {
    assert.equal(tensorFromTyped(new Float32Array([1]), [1]).dtype, 'F32');
    assert.equal(tensorFromTyped(new Int32Array([1]), [1]).dtype, 'I32');
    assert.equal(tensorFromTyped(new BigInt64Array([1n]), [1]).dtype, 'I64');
    assert.equal(tensorFromTyped(new Int8Array([1]), [1]).dtype, 'I8');
    assert.equal(tensorFromTyped(new Uint8Array([1]), [1]).dtype, 'U8');
    const h = tensorFromTyped(new Float32Array([1, -2]), [2], 'F16');
    assert.deepEqual(Array.from(h.bytes), [0x00, 0x3c, 0x00, 0xc0]);
    const i64 = tensorFromTyped(new Int32Array([-1, 5]), [2, 1], 'I64');
    assert.deepEqual(Array.from(i64.bytes), [255, 255, 255, 255, 255, 255, 255, 255, 5, 0, 0, 0, 0, 0, 0, 0]);
    assert.deepEqual(Array.from(toFloat32(tensorFromTyped(new Float32Array([3, -4]), [2], 'I8'))), [3, -4]);
    assert.deepEqual(Array.from(toFloat32(tensorFromTyped(new BigInt64Array([7n]), [], 'BF16'))), [7]);
    assert.throws(() => tensorFromTyped(new Float32Array([1.5]), [1], 'I32'), /1.5 does not fit dtype I32/);
    assert.throws(() => tensorFromTyped(new Int32Array([300]), [1], 'U8'), /300 does not fit dtype U8/);
    assert.throws(() => tensorFromTyped(new Uint8Array([2]), [1], 'BOOL'), /does not fit dtype BOOL/);
    assert.throws(() => tensorFromTyped(new Float32Array([1, 2]), [3]), /holds 3 values but the data has 2/);
    assert.throws(() => fromFloat32(new Float32Array([1, 2]), [1, 1], 'F16'), DikeError);
    // the tensor owns its bytes
    const src = new Float32Array([1, 2]);
    const t = tensorFromTyped(src, [2]);
    src[0] = 5;
    assert.deepEqual(Array.from(toFloat32(t)), [1, 2]);
  });
});

describe('validation and corruption', () => {
  const small = serializeSafetensors(
    [
      ['a', fromFloat32(new Float32Array([1, 2, 3, 4]), [2, 2], 'F16')],
      ['b', tensorFromTyped(new Int32Array([7, -7]), [2])],
      ['c', tensorFromTyped(new Float32Array([0.5]), [])],
      ['z', tensorFromTyped(new Float32Array(0), [0, 4])],
    ],
    { format: 'pt' },
  );

  /** Parse, and insist the result is a DikeError or a consistent file. */
  function parseOrDikeError(bytes: Uint8Array): 'ok' | 'error' {
    try {
      const st = parseSafetensors(bytes, 'fuzz');
      for (const [name, t] of st.tensors) {
        assert.equal(t.bytes.length, tensorByteLength(t.dtype, t.shape), name);
        assert.ok(DTYPE_BYTES[t.dtype] > 0, name);
        assert.ok(t.bytes.byteOffset >= bytes.byteOffset && t.bytes.byteOffset + t.bytes.length <= bytes.byteOffset + bytes.length);
        toFloat32(t);
      }
      for (const v of Object.values(st.metadata)) assert.equal(typeof v, 'string');
      return 'ok';
    } catch (e) {
      if (e instanceof DikeError) {
        assert.equal(e.file, 'fuzz');
        assert.ok(e.problem.length > 0);
        return 'error';
      }
      throw e;
    }
  }

  test('the small file parses', () => {
    assert.equal(parseOrDikeError(small), 'ok');
  });

  test('truncated at every length', () => {
    for (let n = 0; n < small.length; n++) {
      assert.equal(parseOrDikeError(small.subarray(0, n)), 'error', `length ${n}`);
    }
    assert.equal(parseOrDikeError(small), 'ok');
    // and one byte too many
    const longer = new Uint8Array(small.length + 1);
    longer.set(small);
    expectDikeError(() => parseSafetensors(longer, 'x.safetensors'), `byte ${small.length}`, /1 trailing bytes/);
  });

  test('random byte flips (seeded)', () => {
    const rand = prng(20240601);
    let ok = 0;
    let errors = 0;
    for (let trial = 0; trial < 4000; trial++) {
      const bytes = small.slice();
      const flips = 1 + Math.floor(rand() * 4);
      for (let k = 0; k < flips; k++) {
        // half of the flips hit the first 8 bytes + header, where parsing can go wrong
        const headerEnd = small.length - 20;
        const at = rand() < 0.8 ? Math.floor(rand() * headerEnd) : Math.floor(rand() * bytes.length);
        bytes[at] = rand() < 0.5 ? bytes[at]! ^ (1 << Math.floor(rand() * 8)) : Math.floor(rand() * 256);
      }
      if (parseOrDikeError(bytes) === 'ok') ok++;
      else errors++;
    }
    assert.ok(errors > 1000, `errors ${errors}`);
    assert.ok(ok > 0, `ok ${ok}`); // flips in the data section or in spaces keep the file valid
  });

  test('random headers built from valid pieces (seeded)', () => {
    const rand = prng(7);
    const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)]!;
    const values: unknown[] = [0, 1, 2, 3, 4, 8, 16, -1, 1.5, 2 ** 53, 1e300, null, true, 'F32', 'F16', 'BF16', 'I64', 'X', [], [2], [0, 4], [2, 2], [4, 8], {}];
    for (let trial = 0; trial < 2000; trial++) {
      const header: Record<string, unknown> = {};
      const count = Math.floor(rand() * 4);
      for (let i = 0; i < count; i++) {
        const entry: Record<string, unknown> = {};
        if (rand() < 0.9) entry.dtype = rand() < 0.7 ? pick(['F32', 'F16', 'I8', 'I64', 'BOOL']) : pick(values);
        if (rand() < 0.9) entry.shape = rand() < 0.7 ? pick([[], [2], [0, 4], [2, 2], [1, 1, 2]]) : pick(values);
        if (rand() < 0.9) entry.data_offsets = rand() < 0.7 ? pick([[0, 4], [4, 8], [0, 8], [8, 16], [0, 0]]) : pick(values);
        header[pick(['a', 'b', 'c', '__metadata__'])] = rand() < 0.9 ? entry : pick(values);
      }
      const data = new Uint8Array(pick([0, 4, 8, 16, 17]));
      parseOrDikeError(fileWith(JSON.stringify(header), data));
    }
  });

  describe('each rule, with its message', () => {
    const bad = (bytes: Uint8Array, place: string, problem: RegExp) =>
      expectDikeError(() => parseSafetensors(bytes, 'x.safetensors'), place, problem);
    const f32x2 = new Uint8Array(8);
    const entry = (e: unknown) => fileWith(JSON.stringify({ 'bert.x.weight': e }), f32x2);
    const ok = { dtype: 'F32', shape: [2], data_offsets: [0, 8] };

    test('a well-formed entry parses (the baseline for the cases below)', () => {
      assert.deepEqual(parseSafetensors(entry(ok), 'x.safetensors').tensors.get('bert.x.weight')?.shape, [2]);
    });
    test('file shorter than 8 bytes', () => {
      bad(new Uint8Array(0), 'header', /file is 0 bytes, too short/);
      bad(new Uint8Array(7), 'header', /file is 7 bytes, too short/);
    });
    test('header length 0, over the cap, past the end', () => {
      bad(new Uint8Array(8), 'header', /header length is 0/);
      bad(fileWith('{}', new Uint8Array(0), 100_000_001n), 'header', /header length 100000001 is over the limit of 100000000 bytes/);
      bad(fileWith('{}', new Uint8Array(0), 2n ** 64n - 1n), 'header', /is over the limit/);
      bad(fileWith('{}', new Uint8Array(0), 3n), 'header', /header length 3 runs past the end of the file \(10 bytes\)/);
    });
    test('header not UTF-8, not JSON, not an object', () => {
      const latin = fileWith('{"a":1}');
      latin[10] = 0xff;
      bad(latin, 'header', /header is not valid UTF-8/);
      bad(fileWith('{"a":'), 'header', /header is not valid JSON/);
      bad(fileWith(''.padEnd(8)), 'header', /header is not valid JSON/);
      bad(fileWith('[1,2]   '), 'header', /header is an array, not a JSON object/);
      bad(fileWith('null    '), 'header', /header is null, not a JSON object/);
      bad(fileWith('"str"   '), 'header', /header is a string, not a JSON object/);
      bad(fileWith('12345678'), 'header', /header is a number, not a JSON object/);
    });
    test('entry not an object', () => {
      bad(entry(5), 'tensor "bert.x.weight"', /entry is a number, not an object/);
      bad(entry([1]), 'tensor "bert.x.weight"', /entry is an array, not an object/);
      bad(entry(null), 'tensor "bert.x.weight"', /entry is null, not an object/);
    });
    test('dtype missing, wrong type, unknown', () => {
      bad(entry({ ...ok, dtype: undefined }), 'tensor "bert.x.weight"', /dtype is missing/);
      bad(entry({ ...ok, dtype: 4 }), 'tensor "bert.x.weight"', /dtype must be a string, got a number/);
      bad(entry({ ...ok, dtype: 'F64' }), 'tensor "bert.x.weight"', /unsupported dtype "F64" \(supported: F32, F16, BF16/);
      bad(entry({ ...ok, dtype: 'f32' }), 'tensor "bert.x.weight"', /unsupported dtype "f32"/);
      bad(entry({ ...ok, dtype: 'toString' }), 'tensor "bert.x.weight"', /unsupported dtype "toString"/);
    });
    test('shape missing or not non-negative integers', () => {
      bad(entry({ ...ok, shape: undefined }), 'tensor "bert.x.weight"', /shape is missing/);
      for (const shape of [2, '2', [-2], [1.5], ['2'], [null], [2 ** 53], { 0: 2 }]) {
        bad(entry({ ...ok, shape }), 'tensor "bert.x.weight"', /shape must be an array of non-negative integers/);
      }
    });
    test('data_offsets missing, malformed, reversed', () => {
      bad(entry({ ...ok, data_offsets: undefined }), 'tensor "bert.x.weight"', /data_offsets is missing/);
      for (const data_offsets of [[0], [0, 8, 8], [0, -8], [0.5, 8], ['0', 8], 8, null]) {
        bad(entry({ ...ok, data_offsets }), 'tensor "bert.x.weight"', /data_offsets must be two non-negative integers/);
      }
      bad(entry({ ...ok, shape: [0], data_offsets: [8, 0] }), 'tensor "bert.x.weight"', /data_offsets \[8, 0\] begin is after end/);
    });
    test('size of shape and dtype differs from the offsets', () => {
      bad(entry({ ...ok, shape: [3] }), 'tensor "bert.x.weight"', /shape \[3\] of F32 needs 12 bytes but data_offsets \[0, 8\] hold 8/);
      bad(entry({ ...ok, dtype: 'F16' }), 'tensor "bert.x.weight"', /shape \[2\] of F16 needs 4 bytes/);
      bad(entry({ ...ok, shape: [] }), 'tensor "bert.x.weight"', /shape \[\] of F32 needs 4 bytes/);
      bad(entry({ ...ok, shape: [2 ** 30, 2 ** 30, 2 ** 30] }), 'tensor "bert.x.weight"', /too large/);
    });
    test('offsets beyond the data section', () => {
      bad(entry({ ...ok, shape: [4], data_offsets: [0, 16] }), 'tensor "bert.x.weight"', /data_offsets \[0, 16\] run past the end of the data section \(8 bytes\)/);
      bad(
        entry({ ...ok, data_offsets: [2 ** 52, 2 ** 52 + 8] }),
        'tensor "bert.x.weight"',
        /run past the end of the data section/,
      );
    });
    test('overlapping tensors', () => {
      const h = JSON.stringify({
        a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
        b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] },
      });
      bad(fileWith(h, f32x2), 'tensor "b"', /data_offsets \[4, 8\] overlap tensor "a" \[0, 8\]/);
      const same = JSON.stringify({
        a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
        b: { dtype: 'I32', shape: [2], data_offsets: [0, 8] },
      });
      bad(fileWith(same, f32x2), 'tensor "b"', /overlap tensor "a"/);
    });
    test('holes and trailing bytes', () => {
      const header = (h: object) => JSON.stringify(h);
      const hole = header({
        a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] },
        b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] },
      });
      const file = fileWith(hole, new Uint8Array(12));
      bad(file, `byte ${8 + new TextEncoder().encode(hole).length + 4}`, /data bytes \[4, 8\) are not covered by any tensor/);
      const start = header({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } });
      bad(fileWith(start, f32x2), `byte ${8 + start.length}`, /data bytes \[0, 4\) are not covered/);
      const trailing = header({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } });
      bad(fileWith(trailing, f32x2), `byte ${8 + trailing.length + 4}`, /4 trailing bytes after the last tensor/);
      bad(fileWith('{}', new Uint8Array(3)), 'byte 10', /3 trailing bytes/);
    });
    test('__metadata__ must be an object of strings', () => {
      const m = (meta: unknown) => fileWith(JSON.stringify({ __metadata__: meta, 'bert.x.weight': ok }), f32x2);
      assert.deepEqual(parseSafetensors(m({ format: 'pt', k: '' }), 'x.safetensors').metadata, { format: 'pt', k: '' });
      bad(m('pt'), '__metadata__', /must be an object of string values, got a string/);
      bad(m(['pt']), '__metadata__', /got an array/);
      bad(m(null), '__metadata__', /got null/);
      bad(m({ format: 'pt', n: 1 }), '__metadata__ "n"', /value must be a string, got a number/);
      bad(m({ nested: {} }), '__metadata__ "nested"', /value must be a string, got an object/);
    });
    test('odd but valid: names that look like object internals, zero-size tensors anywhere on a boundary', () => {
      const h = JSON.stringify({
        __proto__x: { dtype: 'U8', shape: [0], data_offsets: [0, 0] },
        constructor: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
        e: { dtype: 'BOOL', shape: [3, 0], data_offsets: [8, 8] },
      });
      const st = parseSafetensors(fileWith(h, f32x2), 'x.safetensors');
      assert.deepEqual([...st.tensors.keys()], ['__proto__x', 'constructor', 'e']);
      const proto = parseSafetensors(fileWith('{"__proto__":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', f32x2), 'x');
      assert.deepEqual(proto.tensors.get('__proto__')?.shape, [2]);
    });
  });
});
