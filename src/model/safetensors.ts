/**
 * Safetensors: read, validate and write.
 *
 * Layout of a file:
 *
 *   bytes [0, 8)        N, the header length, a little-endian u64
 *   bytes [8, 8 + N)    the header: UTF-8 JSON, an object
 *                         name -> {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}
 *                       plus an optional "__metadata__": {string: string}.
 *                       Offsets are relative to the start of the data section.
 *   bytes [8 + N, ...)  the data section: every tensor's bytes, little-endian, row-major.
 *
 * The reader trusts nothing: every rule of the format is checked, and a broken file gives a
 * `DikeError(file, place, problem)` naming where (`header`, `tensor "name"`, `byte 1234`).
 * Like the official library it rejects overlapping tensors and a data section that the tensors
 * do not cover exactly (holes or trailing bytes).
 *
 * Tensors that come out of the reader are views into the file's bytes (no copy); treat them as
 * read-only. `toFloat32` always returns a fresh array, so editing its result never edits the file.
 * `readSafetensorsFloat32` (the checkpoint loader's reader) never holds the whole file: it reads
 * each tensor into a float32 array of its own, so the peak is the parameters, not file + copy.
 *
 * The writer keeps the order it is given (header and data in that order, offsets contiguous),
 * so the same input always gives the same bytes, and a file read and written back keeps its
 * layout. Sort the tensors by name first if you want the layout the Hugging Face tools write.
 */
import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import { DikeError } from '../errors.js';

export type DType = 'F32' | 'F16' | 'BF16' | 'I8' | 'U8' | 'I32' | 'I64' | 'BOOL';

export const DTYPE_BYTES: Record<DType, number> = {
  F32: 4,
  F16: 2,
  BF16: 2,
  I8: 1,
  U8: 1,
  I32: 4,
  I64: 8,
  BOOL: 1,
};

/** One tensor as stored: `bytes` is little-endian and exactly `numel(shape) * DTYPE_BYTES[dtype]` long. */
export interface RawTensor {
  dtype: DType;
  shape: number[];
  bytes: Uint8Array;
}

export interface SafetensorsFile {
  file: string;
  metadata: Record<string, string>;
  /**
   * Tensors in header order, as `JSON.parse` gives it (names that are array indices, like "0",
   * would come first; real checkpoints have none).
   */
  tensors: Map<string, RawTensor>;
}

/** Largest header we accept, in bytes (the official library's cap). */
export const MAX_HEADER_BYTES = 100_000_000;

const METADATA_KEY = '__metadata__';

const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export function isDType(s: unknown): s is DType {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_BYTES, s);
}

/** Number of elements of a shape; `[]` (a scalar) has one. */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Bytes a tensor of this dtype and shape takes. */
export function tensorByteLength(dtype: DType, shape: readonly number[]): number {
  return numel(shape) * DTYPE_BYTES[dtype];
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return 'an object';
  if (typeof v === 'undefined') return 'undefined';
  return `a ${typeof v}`;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** One tensor's place in a file: `begin`/`end` are absolute byte offsets in the file. */
export interface TensorEntry {
  name: string;
  dtype: DType;
  shape: number[];
  begin: number;
  end: number;
}

/**
 * Validate a file's header and layout from its length and a reader of byte ranges (only the
 * first 8 bytes and the header are read). Entries are in header order, offsets absolute.
 */
function parseLayout(
  read: (begin: number, length: number) => Uint8Array,
  fileLength: number,
  file: string,
): { metadata: Record<string, string>; entries: TensorEntry[] } {
  const fail = (place: string, problem: string): never => {
    throw new DikeError(file, place, problem);
  };

  if (fileLength < 8) {
    fail('header', `file is ${fileLength} bytes, too short for the 8-byte header length`);
  }
  const first = read(0, 8);
  const n64 = new DataView(first.buffer, first.byteOffset, 8).getBigUint64(0, true);
  if (n64 === 0n) fail('header', 'header length is 0');
  if (n64 > BigInt(MAX_HEADER_BYTES)) {
    fail('header', `header length ${n64} is over the limit of ${MAX_HEADER_BYTES} bytes`);
  }
  const headerLength = Number(n64);
  if (headerLength > fileLength - 8) {
    fail('header', `header length ${headerLength} runs past the end of the file (${fileLength} bytes)`);
  }

  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(read(8, headerLength));
  } catch {
    return fail('header', 'header is not valid UTF-8');
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    return fail('header', `header is not valid JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(header)) return fail('header', `header is ${describe(header)}, not a JSON object`);

  const dataStart = 8 + headerLength;
  const dataLength = fileLength - dataStart;

  let metadata: Record<string, string> = {};
  type Entry = TensorEntry;
  const entries: Entry[] = [];

  for (const [name, value] of Object.entries(header)) {
    if (name === METADATA_KEY) {
      if (!isPlainObject(value)) fail(METADATA_KEY, `must be an object of string values, got ${describe(value)}`);
      const pairs: [string, string][] = [];
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        if (typeof v !== 'string') fail(`${METADATA_KEY} ${JSON.stringify(k)}`, `value must be a string, got ${describe(v)}`);
        pairs.push([k, v as string]);
      }
      metadata = Object.fromEntries(pairs);
      continue;
    }
    const place = `tensor ${JSON.stringify(name)}`;
    if (!isPlainObject(value)) fail(place, `entry is ${describe(value)}, not an object`);
    const entry = value as Record<string, unknown>;

    const dtype = entry.dtype;
    if (dtype === undefined) fail(place, 'dtype is missing');
    if (typeof dtype !== 'string') fail(place, `dtype must be a string, got ${describe(dtype)}`);
    if (!isDType(dtype)) {
      fail(place, `unsupported dtype ${JSON.stringify(dtype)} (supported: ${Object.keys(DTYPE_BYTES).join(', ')})`);
    }

    const shape = entry.shape;
    if (shape === undefined) fail(place, 'shape is missing');
    if (!Array.isArray(shape) || !shape.every(isCount)) {
      fail(place, `shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
    }

    const offsets = entry.data_offsets;
    if (offsets === undefined) fail(place, 'data_offsets is missing');
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
      fail(place, `data_offsets must be two non-negative integers [begin, end], got ${JSON.stringify(offsets)}`);
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end) fail(place, `data_offsets [${begin}, ${end}] begin is after end`);

    const dims = shape as number[];
    const count = dims.includes(0) ? 0 : numel(dims);
    const need = count * DTYPE_BYTES[dtype as DType];
    if (!Number.isSafeInteger(need)) fail(place, `shape [${dims.join(', ')}] is too large`);
    if (need !== end - begin) {
      fail(
        place,
        `shape [${dims.join(', ')}] of ${dtype} needs ${need} bytes but data_offsets [${begin}, ${end}] hold ${end - begin}`,
      );
    }
    if (end > dataLength) {
      fail(place, `data_offsets [${begin}, ${end}] run past the end of the data section (${dataLength} bytes)`);
    }
    entries.push({ name, dtype: dtype as DType, shape: dims.slice(), begin, end });
  }

  // The tensors must tile the data section exactly: no overlaps, no holes, nothing after the last.
  const sorted = entries.slice().sort((a, b) => a.begin - b.begin || a.end - b.end);
  let covered = 0;
  let last: Entry | undefined;
  for (const e of sorted) {
    if (e.begin < covered && last !== undefined) {
      fail(
        `tensor ${JSON.stringify(e.name)}`,
        `data_offsets [${e.begin}, ${e.end}] overlap tensor ${JSON.stringify(last.name)} [${last.begin}, ${last.end}]`,
      );
    }
    if (e.begin > covered) {
      fail(`byte ${dataStart + covered}`, `data bytes [${covered}, ${e.begin}) are not covered by any tensor`);
    }
    covered = e.end;
    last = e;
  }
  if (covered !== dataLength) {
    fail(
      `byte ${dataStart + covered}`,
      `${dataLength - covered} trailing bytes after the last tensor are not covered by any tensor`,
    );
  }

  return { metadata, entries: entries.map((e) => ({ ...e, begin: dataStart + e.begin, end: dataStart + e.end })) };
}

/** Parse and validate a whole safetensors file held in memory. Tensor bytes are views into `bytes`. */
export function parseSafetensors(bytes: Uint8Array, file: string): SafetensorsFile {
  const { metadata, entries } = parseLayout((b, n) => bytes.subarray(b, b + n), bytes.length, file);
  const tensors = new Map<string, RawTensor>();
  for (const e of entries) {
    tensors.set(e.name, { dtype: e.dtype, shape: e.shape, bytes: new Uint8Array(bytes.buffer, bytes.byteOffset + e.begin, e.end - e.begin) });
  }
  return { file, metadata, tensors };
}

/** Read and validate a safetensors file. */
export function readSafetensors(path: string): SafetensorsFile {
  let bytes: Uint8Array;
  try {
    bytes = fs.readFileSync(path);
  } catch (e) {
    throw new DikeError(path, '', `cannot read file: ${fsProblem(e)}`);
  }
  return parseSafetensors(bytes, path);
}

/** One tensor as float32, in an array of its own (see `readSafetensorsFloat32`). */
export interface Float32Tensor {
  dtype: DType;
  shape: number[];
  data: Float32Array;
}

/** Largest single read: `fs.readSync` takes at most 2^31 − 1 bytes at a time. */
const READ_CHUNK = 1 << 30;

/**
 * Read and validate a safetensors file tensor by tensor, each straight into a float32 array of its
 * own (converted as `toFloat32` does), without ever holding the whole file: the peak is the
 * float32 parameters plus one non-F32 tensor's bytes, not the file and its float32 copy together.
 * The validation and its errors are `readSafetensors`'s (the header is read first and checked
 * against the file's length). `visit` sees each tensor in header order.
 */
export function readSafetensorsFloat32(
  path: string,
  visit: (name: string, t: Float32Tensor, stored: TensorEntry) => void,
): { metadata: Record<string, string> } {
  let fd: number;
  let size: number;
  try {
    fd = fs.openSync(path, 'r');
  } catch (e) {
    throw new DikeError(path, '', `cannot read file: ${fsProblem(e)}`);
  }
  try {
    try {
      const st = fs.fstatSync(fd);
      if (st.isDirectory()) throw Object.assign(new Error('directory'), { code: 'EISDIR' });
      size = st.size;
    } catch (e) {
      throw new DikeError(path, '', `cannot read file: ${fsProblem(e)}`);
    }
    const readInto = (into: Uint8Array, position: number): void => {
      let at = 0;
      while (at < into.length) {
        let got: number;
        try {
          got = fs.readSync(fd, into, at, Math.min(READ_CHUNK, into.length - at), position + at);
        } catch (e) {
          throw new DikeError(path, `byte ${position + at}`, `cannot read file: ${fsProblem(e)}`);
        }
        if (got === 0) throw new DikeError(path, `byte ${position + at}`, 'file ended early (was it changed while being read?)');
        at += got;
      }
    };
    const { metadata, entries } = parseLayout(
      (begin, length) => {
        const b = new Uint8Array(length);
        readInto(b, begin);
        return b;
      },
      size,
      path,
    );
    for (const e of entries) {
      const length = e.end - e.begin;
      let data: Float32Array;
      if (e.dtype === 'F32' && LITTLE_ENDIAN_HOST) {
        data = new Float32Array(length / 4);
        readInto(new Uint8Array(data.buffer), e.begin);
      } else {
        const bytes = new Uint8Array(length);
        readInto(bytes, e.begin);
        data = toFloat32({ dtype: e.dtype, shape: e.shape, bytes });
      }
      visit(e.name, { dtype: e.dtype, shape: e.shape, data }, e);
    }
    return { metadata };
  } finally {
    fs.closeSync(fd);
  }
}

function fsProblem(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  switch (err?.code) {
    case 'ENOENT':
      return 'no such file';
    case 'EISDIR':
      return 'it is a directory';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    default:
      return err?.message ?? String(e);
  }
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

/** Header bytes and the data chunks that follow them, in order. */
function layout(
  tensors: Iterable<[string, RawTensor]>,
  metadata: Record<string, string>,
): { header: Uint8Array; chunks: Uint8Array[]; total: number } {
  const parts: string[] = [];
  const meta = Object.entries(metadata);
  for (const [k, v] of meta) {
    if (typeof v !== 'string') {
      throw new DikeError('', `${METADATA_KEY} ${JSON.stringify(k)}`, `value must be a string, got ${describe(v)}`);
    }
  }
  parts.push(`${JSON.stringify(METADATA_KEY)}:{${meta.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(',')}}`);

  const seen = new Set<string>();
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of tensors) {
    const place = `tensor ${JSON.stringify(name)}`;
    if (name === METADATA_KEY) throw new DikeError('', place, `"${METADATA_KEY}" is reserved for metadata`);
    if (seen.has(name)) throw new DikeError('', place, 'tensor name given twice');
    seen.add(name);
    checkTensor(t, place);
    const begin = offset;
    offset += t.bytes.length;
    parts.push(
      `${JSON.stringify(name)}:{"dtype":${JSON.stringify(t.dtype)},"shape":[${t.shape.join(',')}],"data_offsets":[${begin},${offset}]}`,
    );
    chunks.push(t.bytes);
  }

  const json = `{${parts.join(',')}}`;
  const jsonBytes = new TextEncoder().encode(json);
  const padded = Math.ceil(jsonBytes.length / 8) * 8;
  const header = new Uint8Array(8 + padded);
  new DataView(header.buffer).setBigUint64(0, BigInt(padded), true);
  header.set(jsonBytes, 8);
  header.fill(0x20, 8 + jsonBytes.length);
  return { header, chunks, total: header.length + offset };
}

function checkTensor(t: RawTensor, place: string): void {
  if (!isDType(t.dtype)) throw new DikeError('', place, `unsupported dtype ${JSON.stringify(t.dtype)}`);
  if (!Array.isArray(t.shape) || !t.shape.every(isCount)) {
    throw new DikeError('', place, `shape must be an array of non-negative integers, got ${JSON.stringify(t.shape)}`);
  }
  const need = tensorByteLength(t.dtype, t.shape);
  if (!(t.bytes instanceof Uint8Array) || t.bytes.length !== need) {
    throw new DikeError(
      '',
      place,
      `shape [${t.shape.join(', ')}] of ${t.dtype} needs ${need} bytes but the tensor holds ${t.bytes?.length}`,
    );
  }
}

/**
 * The bytes of a safetensors file holding `tensors` in the order given, with `metadata`
 * (default `{"format": "pt"}`). The header is padded with spaces to a multiple of 8 bytes.
 */
export function serializeSafetensors(
  tensors: Iterable<[string, RawTensor]>,
  metadata: Record<string, string> = { format: 'pt' },
): Uint8Array {
  const { header, chunks, total } = layout(tensors, metadata);
  const out = new Uint8Array(total);
  out.set(header, 0);
  let at = header.length;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/**
 * Write a safetensors file atomically: the bytes go to a temporary file beside `path`, which is
 * then renamed over it, so a reader never sees half a file.
 */
export function writeSafetensors(
  path: string,
  tensors: Iterable<[string, RawTensor]>,
  metadata: Record<string, string> = { format: 'pt' },
): void {
  let header: Uint8Array;
  let chunks: Uint8Array[];
  try {
    ({ header, chunks } = layout(tensors, metadata));
  } catch (e) {
    if (e instanceof DikeError && e.file === '') throw new DikeError(path, e.place, e.problem);
    throw e;
  }
  const tmp = nodePath.join(
    nodePath.dirname(path),
    `.${nodePath.basename(path)}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`,
  );
  let fd: number | undefined;
  try {
    fd = fs.openSync(tmp, 'wx');
    writeAll(fd, header);
    for (const c of chunks) writeAll(fd, c);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(tmp, path);
  } catch (e) {
    if (fd !== undefined) {
      try {
        fs.closeSync(fd);
      } catch {
        /* already failing */
      }
    }
    try {
      fs.unlinkSync(tmp);
    } catch {
      /* it may not exist */
    }
    throw new DikeError(path, '', `cannot write file: ${fsProblem(e)}`);
  }
}

function writeAll(fd: number, bytes: Uint8Array): void {
  let at = 0;
  while (at < bytes.length) at += fs.writeSync(fd, bytes, at, bytes.length - at);
}

// ---------------------------------------------------------------------------------------------
// Conversions
// ---------------------------------------------------------------------------------------------

let f16Table: Uint32Array | undefined;

/** float32 bit patterns of all 65,536 float16 values (exact; NaN payloads kept). */
function f16ToF32Bits(): Uint32Array {
  if (f16Table) return f16Table;
  const table = new Uint32Array(65536);
  const f = new Float32Array(table.buffer);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 0) {
      // zero or subnormal: mant * 2^-24, exact in float32
      f[h] = (h & 0x8000 ? -mant : mant) * 2 ** -24;
    } else if (exp === 0x1f) {
      table[h] = (sign | 0x7f800000 | (mant << 13)) >>> 0;
    } else {
      table[h] = (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0;
    }
  }
  f16Table = table;
  return table;
}

/** A typed view of `bytes` when it is aligned for it, else of an aligned copy. */
function aligned<T>(bytes: Uint8Array, size: number, make: (b: ArrayBufferLike, off: number, n: number) => T): T {
  const n = bytes.length / size;
  if (bytes.byteOffset % size === 0) return make(bytes.buffer, bytes.byteOffset, n);
  const copy = bytes.slice();
  return make(copy.buffer, 0, n);
}

/**
 * The tensor's values as a fresh Float32Array (never a view of the tensor's bytes).
 * F32 is copied, F16 and BF16 are widened exactly (NaN and infinities kept), integer and bool
 * types are converted by value (I64 beyond 2^24 rounds, as any float32 would).
 */
export function toFloat32(t: RawTensor): Float32Array {
  const bytes = t.bytes;
  const n = bytes.length / DTYPE_BYTES[t.dtype];
  const out = new Float32Array(n);
  if (!LITTLE_ENDIAN_HOST) {
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const bits = new Uint32Array(out.buffer);
    const table = f16ToF32Bits();
    for (let i = 0; i < n; i++) {
      switch (t.dtype) {
        case 'F32': bits[i] = dv.getUint32(4 * i, true); break;
        case 'F16': bits[i] = table[dv.getUint16(2 * i, true)]!; break;
        case 'BF16': bits[i] = dv.getUint16(2 * i, true) << 16; break;
        case 'I8': out[i] = dv.getInt8(i); break;
        case 'U8': out[i] = dv.getUint8(i); break;
        case 'BOOL': out[i] = dv.getUint8(i) !== 0 ? 1 : 0; break;
        case 'I32': out[i] = dv.getInt32(4 * i, true); break;
        case 'I64': out[i] = Number(dv.getBigInt64(8 * i, true)); break;
      }
    }
    return out;
  }
  switch (t.dtype) {
    case 'F32':
      new Uint8Array(out.buffer).set(bytes);
      break;
    case 'F16': {
      const table = f16ToF32Bits();
      const src = aligned(bytes, 2, (b, o, k) => new Uint16Array(b, o, k));
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) bits[i] = table[src[i]!]!;
      break;
    }
    case 'BF16': {
      const src = aligned(bytes, 2, (b, o, k) => new Uint16Array(b, o, k));
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) bits[i] = src[i]! << 16;
      break;
    }
    case 'I8':
      out.set(new Int8Array(bytes.buffer, bytes.byteOffset, n));
      break;
    case 'U8':
      out.set(bytes);
      break;
    case 'BOOL':
      for (let i = 0; i < n; i++) out[i] = bytes[i] !== 0 ? 1 : 0;
      break;
    case 'I32':
      out.set(aligned(bytes, 4, (b, o, k) => new Int32Array(b, o, k)));
      break;
    case 'I64': {
      const src = aligned(bytes, 8, (b, o, k) => new BigInt64Array(b, o, k));
      for (let i = 0; i < n; i++) out[i] = Number(src[i]!);
      break;
    }
  }
  return out;
}

/** float32 bits -> float16 bits, rounding to nearest, ties to even (NaN stays NaN, payload truncated). */
export function f32BitsToF16(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const abs = x & 0x7fffffff;
  if (abs >= 0x7f800000) {
    if (abs === 0x7f800000) return sign | 0x7c00;
    const payload = (abs >>> 13) & 0x3ff;
    return sign | 0x7c00 | (payload === 0 ? 0x200 : payload);
  }
  // 0x477ff000 is 65520, halfway between 65504 (the largest half) and 65536: ties go up to Inf.
  if (abs >= 0x477ff000) return sign | 0x7c00;
  if (abs >= 0x38800000) {
    // normal half: rebias the exponent (127 -> 15) and drop 13 mantissa bits
    const t = abs - 0x38000000;
    let q = t >>> 13;
    const rem = t & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && (q & 1) === 1)) q++;
    return sign | q;
  }
  // subnormal half (or zero): value / 2^-24, rounded. 0x33000000 is 2^-25, which ties to 0.
  if (abs <= 0x33000000) return sign;
  const exp = abs >>> 23; // 102..112
  const m = (abs & 0x7fffff) | 0x800000;
  const shift = 126 - exp; // 14..24
  let q = m >>> shift;
  const rem = m & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rem > half || (rem === half && (q & 1) === 1)) q++;
  return sign | q;
}

/** float32 bits -> bfloat16 bits, rounding to nearest, ties to even (NaN stays NaN). */
export function f32BitsToBF16(x: number): number {
  if ((x & 0x7fffffff) > 0x7f800000) {
    const h = x >>> 16;
    return (h & 0x7f) === 0 ? h | 0x40 : h;
  }
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/**
 * Store float32 values as F32, F16 or BF16. Narrowing rounds to nearest, ties to even, as
 * PyTorch's `.to(torch.float16 / torch.bfloat16)` does; values past the range become ±Inf,
 * NaN stays NaN.
 */
export function fromFloat32(data: Float32Array, shape: number[], dtype: 'F32' | 'F16' | 'BF16'): RawTensor {
  checkShape(data.length, shape);
  const n = data.length;
  const src = new Uint32Array(data.buffer, data.byteOffset, n);
  if (dtype === 'F32') return { dtype, shape: shape.slice(), bytes: littleEndianBytes(data) };
  if (dtype !== 'F16' && dtype !== 'BF16') throw new DikeError('', '', `fromFloat32 cannot make dtype ${JSON.stringify(dtype)}`);
  const half = new Uint16Array(n);
  if (dtype === 'F16') for (let i = 0; i < n; i++) half[i] = f32BitsToF16(src[i]!);
  else for (let i = 0; i < n; i++) half[i] = f32BitsToBF16(src[i]!);
  return { dtype, shape: shape.slice(), bytes: littleEndianBytes(half) };
}

function checkShape(length: number, shape: number[]): void {
  if (!Array.isArray(shape) || !shape.every(isCount)) {
    throw new DikeError('', 'shape', `must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
  }
  if (numel(shape) !== length) {
    throw new DikeError('', 'shape', `[${shape.join(', ')}] holds ${numel(shape)} values but the data has ${length}`);
  }
}

type Typed = Float32Array | Int32Array | BigInt64Array | Int8Array | Uint8Array | Uint16Array | Uint32Array;

/** A fresh little-endian copy of a typed array's bytes. */
function littleEndianBytes(a: Typed): Uint8Array {
  const out = new Uint8Array(a.byteLength);
  if (LITTLE_ENDIAN_HOST || a.BYTES_PER_ELEMENT === 1) {
    out.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
    return out;
  }
  const dv = new DataView(out.buffer);
  for (let i = 0; i < a.length; i++) {
    if (a instanceof Float32Array) dv.setFloat32(4 * i, a[i]!, true);
    else if (a instanceof Int32Array) dv.setInt32(4 * i, a[i]!, true);
    else if (a instanceof Uint32Array) dv.setUint32(4 * i, a[i]!, true);
    else if (a instanceof Uint16Array) dv.setUint16(2 * i, a[i]!, true);
    else if (a instanceof BigInt64Array) dv.setBigInt64(8 * i, a[i]!, true);
  }
  return out;
}

function dtypeOf(data: Float32Array | Int32Array | BigInt64Array | Int8Array | Uint8Array): DType {
  if (data instanceof Float32Array) return 'F32';
  if (data instanceof Int32Array) return 'I32';
  if (data instanceof BigInt64Array) return 'I64';
  if (data instanceof Int8Array) return 'I8';
  return 'U8';
}

const INT_RANGE: Partial<Record<DType, [number, number]>> = {
  I8: [-128, 127],
  U8: [0, 255],
  BOOL: [0, 1],
  I32: [-2147483648, 2147483647],
  I64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
};

/**
 * A tensor from a typed array (copied). The dtype defaults to the array's own: Float32Array ->
 * F32, Int32Array -> I32, BigInt64Array -> I64, Int8Array -> I8, Uint8Array -> U8. Another
 * dtype converts by value: to F16/BF16 by rounding, to an integer type or BOOL only when every
 * value is an integer in range (else a DikeError at place `value i`).
 */
export function tensorFromTyped(
  data: Float32Array | Int32Array | BigInt64Array | Int8Array | Uint8Array,
  shape: number[],
  dtype?: DType,
): RawTensor {
  const own = dtypeOf(data);
  const target = dtype ?? own;
  if (!isDType(target)) throw new DikeError('', '', `unsupported dtype ${JSON.stringify(target)}`);
  checkShape(data.length, shape);
  if (target === own || (target === 'BOOL' && own === 'U8' && data.every((v) => v === 0 || v === 1))) {
    return { dtype: target, shape: shape.slice(), bytes: littleEndianBytes(data) };
  }
  if (target === 'F32' || target === 'F16' || target === 'BF16') {
    const f = new Float32Array(data.length);
    if (data instanceof BigInt64Array) for (let i = 0; i < data.length; i++) f[i] = Number(data[i]!);
    else f.set(data);
    return fromFloat32(f, shape, target);
  }
  const [lo, hi] = INT_RANGE[target]!;
  const value = (i: number): number => Number(data[i]!);
  for (let i = 0; i < data.length; i++) {
    const v = value(i);
    if (!Number.isInteger(v) || v < lo || v > hi) {
      throw new DikeError('', `value ${i}`, `${v} does not fit dtype ${target}`);
    }
  }
  let out: Typed;
  switch (target) {
    case 'I8':
      out = Int8Array.from(data as ArrayLike<number>, Number);
      break;
    case 'U8':
    case 'BOOL':
      out = Uint8Array.from(data as ArrayLike<number>, Number);
      break;
    case 'I32':
      out = Int32Array.from(data as ArrayLike<number>, Number);
      break;
    case 'I64':
      out = BigInt64Array.from(data as ArrayLike<number>, (v) => BigInt(v));
      break;
  }
  return { dtype: target, shape: shape.slice(), bytes: littleEndianBytes(out) };
}
