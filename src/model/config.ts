/**
 * Typed reads from a Hugging Face `config.json`, with one-line errors that name the file and the key.
 */
import { readFileSync } from 'node:fs';
import { DikeError } from '../errors.js';

export type RawConfig = Record<string, unknown>;

/** The largest size or count a config.json may give (see ConfigReader.int). */
export const MAX_CONFIG_INT = 1 << 24;

export function readJsonObject(path: string): RawConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new DikeError(path, '', (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : `cannot read: ${(e as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new DikeError(path, '', `malformed JSON: ${(e as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new DikeError(path, '', 'expected a JSON object');
  }
  return parsed as RawConfig;
}

/** Reads typed fields of a config object; every problem names the file and the key. */
export class ConfigReader {
  constructor(
    readonly raw: RawConfig,
    readonly file: string,
  ) {}

  has(key: string): boolean {
    return this.raw[key] !== undefined && this.raw[key] !== null;
  }

  private fail(key: string, problem: string): never {
    throw new DikeError(this.file, `"${key}"`, problem);
  }

  num(key: string, fallback?: number): number {
    const v = this.raw[key];
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      this.fail(key, 'required number is missing');
    }
    if (typeof v !== 'number' || !Number.isFinite(v)) this.fail(key, `expected a number, found ${JSON.stringify(v)}`);
    return v;
  }

  /**
   * A positive integer (sizes, counts), at most `max`: 2²⁴ by default, far above any real model's
   * sizes, so that a corrupted value is refused here instead of sizing an allocation or a loop.
   */
  int(key: string, fallback?: number, max = MAX_CONFIG_INT): number {
    const v = this.num(key, fallback);
    if (!Number.isInteger(v) || v <= 0) this.fail(key, `expected a positive integer, found ${v}`);
    if (v > max) this.fail(key, `${v} is larger than any model Dikē reads (at most ${max})`);
    return v;
  }

  str(key: string, fallback?: string): string {
    const v = this.raw[key];
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      this.fail(key, 'required string is missing');
    }
    if (typeof v !== 'string') this.fail(key, `expected a string, found ${JSON.stringify(v)}`);
    return v;
  }

  bool(key: string, fallback: boolean): boolean {
    const v = this.raw[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'boolean') this.fail(key, `expected true or false, found ${JSON.stringify(v)}`);
    return v;
  }

  /** One of the given strings. */
  oneOf<T extends string>(key: string, allowed: readonly T[], fallback?: T): T {
    const v = this.str(key, fallback);
    if (!(allowed as readonly string[]).includes(v)) this.fail(key, `unsupported value "${v}" (supported: ${allowed.join(', ')})`);
    return v as T;
  }

  /** Must be absent or null: a feature Dikē does not implement yet must not be silently ignored. */
  absent(key: string, why: string): void {
    if (this.has(key)) this.fail(key, `unsupported: ${why}`);
  }

  /** Require a divisibility relation between two fields (e.g. hidden size by heads). */
  divisible(a: string, av: number, b: string, bv: number): void {
    if (av % bv !== 0) this.fail(a, `${a} (${av}) must be divisible by ${b} (${bv})`);
  }
}
