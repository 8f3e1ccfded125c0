/**
 * Memory of loading and compressing (issue 15, peak RSS of GPTQ):
 *   - the loader reads each tensor straight into a Float32Array of its own (no whole-file buffer
 *     kept, no view shared between parameters), bit-identical to the stored bytes;
 *   - `applyRecipe(…, { inPlace: true })` compresses the checkpoint's own arrays and gives the
 *     same weights, bit for bit, as the default copying path.
 * Expected values come from hand-built files and a naive reading of the file in this test
 * (the header parsed with JSON.parse, bytes compared as stored), not from the loader.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DikeError } from '../src/errors.js';
import { loadCheckpoint, readParams } from '../src/model/checkpoint.js';
import { readSafetensorsFloat32, type Float32Tensor } from '../src/model/safetensors.js';
import { applyRecipe, parseRecipe } from '../src/compress/recipe.js';
import { DATA, modelDir } from './fixtures.js';

/** A safetensors file from a header object and the data bytes, built by hand (header unpadded, so offsets can be odd). */
function handFile(header: Record<string, unknown>, data: Uint8Array): Uint8Array {
  const h = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

function tmp(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'dike-memload-'));
}

function readAll(file: string): Map<string, Float32Tensor> {
  const got = new Map<string, Float32Tensor>();
  readSafetensorsFloat32(file, (name, t) => got.set(name, t));
  return got;
}

/** The stored bytes of every tensor of a safetensors file, read naively (independent of src/model). */
function naiveTensors(file: string): Map<string, { dtype: string; shape: number[]; bytes: Uint8Array }> {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const out = new Map<string, { dtype: string; shape: number[]; bytes: Uint8Array }>();
  for (const [name, e] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    out.set(name, { dtype: e.dtype, shape: e.shape, bytes: buf.subarray(8 + n + e.data_offsets[0], 8 + n + e.data_offsets[1]) });
  }
  return out;
}

/** Naive float value of stored bytes (F32, F16 by its formula, BF16 as the top half of a float32), in float64. */
function naiveValues(dtype: string, bytes: Uint8Array): number[] {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: number[] = [];
  if (dtype === 'F32') for (let i = 0; i < bytes.length; i += 4) out.push(dv.getFloat32(i, true));
  else if (dtype === 'BF16') for (let i = 0; i < bytes.length; i += 2) {
    const b = new DataView(new ArrayBuffer(4));
    b.setUint32(0, dv.getUint16(i, true) << 16);
    out.push(b.getFloat32(0));
  }
  else if (dtype === 'F16') for (let i = 0; i < bytes.length; i += 2) {
    const h = dv.getUint16(i, true);
    const sign = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const m = h & 0x3ff;
    out.push(e === 0 ? sign * m * 2 ** -24 : e === 31 ? (m ? NaN : sign * Infinity) : sign * 2 ** (e - 15) * (1 + m / 1024));
  }
  else throw new Error(`no naive reader for ${dtype}`);
  return out;
}

describe('loader: each tensor read into its own float32 array', () => {
  it('hand-made file with unaligned F32, F16, BF16, I64 and U8 tensors gives the written values', () => {
    // Data section: u8 [3 bytes] | f32 [2] at offset 3 (unaligned) | f16 [2] | bf16 [1] | i64 [1].
    const data = new Uint8Array(3 + 8 + 4 + 2 + 8);
    const dv = new DataView(data.buffer);
    data.set([0, 7, 255], 0);
    dv.setUint32(3, 0x3fc00000, true); // 1.5
    dv.setUint32(7, 0xc0490fdb, true); // -3.14159274 (float32 of π, negated)
    dv.setUint16(11, 0x3c00, true); // F16 1.0
    dv.setUint16(13, 0x0001, true); // F16 smallest subnormal 2^-24
    dv.setUint16(15, 0x4049, true); // BF16 3.140625
    dv.setBigInt64(17, -12345n, true);
    const header = {
      __metadata__: { format: 'pt' },
      u: { dtype: 'U8', shape: [3], data_offsets: [0, 3] },
      f: { dtype: 'F32', shape: [2, 1], data_offsets: [3, 11] },
      h: { dtype: 'F16', shape: [2], data_offsets: [11, 15] },
      b: { dtype: 'BF16', shape: [], data_offsets: [15, 17] },
      i: { dtype: 'I64', shape: [1], data_offsets: [17, 25] },
    };
    const dir = tmp();
    const file = path.join(dir, 'x.safetensors');
    fs.writeFileSync(file, handFile(header, data));
    const got = readAll(file);
    assert.deepEqual([...got.keys()], ['u', 'f', 'h', 'b', 'i']);
    assert.deepEqual([...got.get('u')!.data], [0, 7, 255]);
    assert.deepEqual(got.get('f')!.shape, [2, 1]);
    assert.deepEqual([...new Uint32Array(got.get('f')!.data.buffer)], [0x3fc00000, 0xc0490fdb]);
    assert.deepEqual([...got.get('h')!.data], [1, 2 ** -24]);
    assert.deepEqual([...got.get('b')!.data], [3.140625]);
    assert.deepEqual(got.get('b')!.shape, []);
    assert.deepEqual([...got.get('i')!.data], [-12345]);
    assert.equal(got.get('h')!.dtype, 'F16');
    // Every array owns exactly its own bytes: nothing keeps the file's buffer alive.
    for (const t of got.values()) {
      assert.equal(t.data.byteOffset, 0);
      assert.equal(t.data.buffer.byteLength, t.data.byteLength);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a truncated file or a bad header is one DikeError naming the file and place', () => {
    const data = new Uint8Array(8);
    const bytes = handFile({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, data);
    const dir = tmp();
    const file = path.join(dir, 'x.safetensors');
    const expectError = (place: string, problem: RegExp): void =>
      assert.throws(() => readAll(file), (e: unknown) => e instanceof DikeError && e.file === file && e.place === place && problem.test(e.problem));
    fs.writeFileSync(file, bytes.subarray(0, bytes.length - 1)); // one data byte short
    expectError('tensor "a"', /run past the end of the data section \(7 bytes\)/);
    fs.writeFileSync(file, bytes.subarray(0, 5));
    expectError('header', /file is 5 bytes, too short/);
    fs.writeFileSync(file, bytes.subarray(0, 20)); // header cut
    expectError('header', /runs past the end of the file \(20 bytes\)/);
    assert.throws(() => readAll(path.join(dir, 'missing.safetensors')), (e: unknown) => e instanceof DikeError && /no such file/.test(e.problem));
    assert.throws(() => readAll(dir), (e: unknown) => e instanceof DikeError && e.file === dir && /directory/.test(e.problem));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  // F32, F16 and (sharded) BF16 checkpoints.
  for (const model of ['tiny-bert-mlm', 'small-bert-mlm', 'tiny-llama']) {
    it(`${model}: every parameter equals the stored bytes, in an array of its own`, () => {
      const { params, files, bytes } = readParams(modelDir(model));
      const stored = new Map<string, { dtype: string; shape: number[]; bytes: Uint8Array }>();
      for (const f of files) for (const [k, v] of naiveTensors(f)) stored.set(k, v);
      assert.equal(params.size, stored.size);
      let total = 0;
      const buffers = new Set<ArrayBufferLike>();
      for (const [name, s] of stored) {
        const p = params.get(name);
        assert.ok(p !== undefined, name);
        assert.deepEqual(p.shape, s.shape);
        assert.equal(p.dtype, s.dtype);
        total += s.bytes.length;
        if (s.dtype === 'F32') {
          // Bit-identical: the parameter's bytes are the file's bytes.
          assert.ok(Buffer.from(p.data.buffer, p.data.byteOffset, p.data.byteLength).equals(Buffer.from(s.bytes)), name);
        } else {
          // F16 and BF16 widen exactly: every value equals the naive decoding (exact in float32).
          const want = naiveValues(s.dtype, s.bytes);
          assert.equal(p.data.length, want.length);
          for (let i = 0; i < want.length; i++) if (p.data[i] !== want[i]) assert.fail(`${name}[${i}]: ${p.data[i]} != ${want[i]}`);
        }
        assert.equal(p.data.buffer.byteLength, p.data.byteLength, `${name} is a view on a larger buffer`);
        assert.ok(!buffers.has(p.data.buffer), `${name} shares a buffer`);
        buffers.add(p.data.buffer);
      }
      assert.equal(bytes, total);
    });
  }
});

describe('applyRecipe in place', () => {
  const recipeFor = (method: Record<string, unknown>): ReturnType<typeof parseRecipe> =>
    parseRecipe(
      JSON.stringify({ seed: 0, calibration: { file: path.join(DATA, 'lm_corpus', 'train.txt'), samples: 4, seq_len: 16 }, steps: [method] }),
      'inplace.json',
    );

  for (const step of [
    { method: 'gptq', bits: 4, group_size: 32 },
    { method: 'layers', remove: 1 },
  ]) {
    it(`${step.method}: in place gives the copying path's weights bit for bit, in the checkpoint's own arrays`, async () => {
      const recipe = recipeFor(step);
      const dense = loadCheckpoint(modelDir('tiny-bert-mlm'));
      const before = new Map([...dense.params].map(([k, p]) => [k, p.data.slice()]));
      const copied = await applyRecipe(dense, recipe, { threads: 1 });
      // The default leaves the dense model untouched.
      for (const [k, p] of dense.params) assert.ok(Buffer.from(p.data.buffer, p.data.byteOffset, p.data.byteLength).equals(Buffer.from(before.get(k)!.buffer)), `dense ${k} changed`);

      const own = loadCheckpoint(modelDir('tiny-bert-mlm'));
      const arrays = new Map([...own.params].map(([k, p]) => [k, p.data]));
      const inPlace = await applyRecipe(own, recipe, { threads: 1, inPlace: true });
      assert.equal(inPlace.params, own.params, 'in place returns the checkpoint\'s own map');
      assert.deepEqual([...inPlace.params.keys()].sort(), [...copied.params.keys()].sort());
      let changed = 0;
      for (const [k, p] of inPlace.params) {
        const c = copied.params.get(k)!;
        assert.deepEqual(p.shape, c.shape);
        assert.ok(Buffer.from(p.data.buffer, p.data.byteOffset, p.data.byteLength).equals(Buffer.from(c.data.buffer, c.data.byteOffset, c.data.byteLength)), `${k} differs`);
        // No second copy: every surviving parameter is still the array the loader made.
        const a = arrays.get(k);
        if (a !== undefined && p.data === a) {
          if (!Buffer.from(a.buffer).equals(Buffer.from(before.get(k)!.buffer))) changed++;
        }
      }
      if (step.method === 'gptq') {
        for (const [k, p] of inPlace.params) assert.equal(p.data, arrays.get(k), `${k} is not the loader's array`);
        // 2 blocks × 6 maps were quantized in the loader's own arrays.
        assert.equal(changed, 12);
        assert.equal(inPlace.reports.flat().length, 12);
      } else {
        // Removing block 1: its parameters are gone from the checkpoint's map, block 0's kept as they were.
        assert.ok([...own.params.keys()].every((k) => !k.includes('.layer.1.')));
        assert.ok([...arrays.keys()].some((k) => k.includes('.layer.1.')));
      }
    });
  }
});
