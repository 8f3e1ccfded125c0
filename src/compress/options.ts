/** Typed reads of a recipe step's options, with errors naming the step and the key. */
import { DikeError } from '../errors.js';
import type { RawOptions } from './types.js';

export class OptionReader {
  private readonly used = new Set<string>(['method', 'scope']);

  constructor(
    private readonly raw: RawOptions,
    private readonly file: string,
    private readonly where: string,
  ) {}

  private fail(key: string, problem: string): never {
    throw new DikeError(this.file, `${this.where} "${key}"`, problem);
  }

  num(key: string, fallback?: number, range?: [number, number]): number {
    this.used.add(key);
    const v = this.raw[key] ?? fallback;
    if (v === undefined) this.fail(key, 'required');
    const n = typeof v === 'string' && v.trim() !== '' ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isFinite(n)) this.fail(key, `expected a number, found ${JSON.stringify(v)}`);
    if (range && (n < range[0] || n > range[1])) this.fail(key, `must be in [${range[0]}, ${range[1]}], found ${n}`);
    return n;
  }

  int(key: string, fallback?: number, range?: [number, number]): number {
    const n = this.num(key, fallback, range);
    if (!Number.isInteger(n)) this.fail(key, `expected an integer, found ${n}`);
    return n;
  }

  bool(key: string, fallback: boolean): boolean {
    this.used.add(key);
    const v = this.raw[key];
    if (v === undefined) return fallback;
    if (v === true || v === 'true') return true;
    if (v === false || v === 'false') return false;
    this.fail(key, `expected true or false, found ${JSON.stringify(v)}`);
  }

  /** A string (numbers are accepted and written as strings, e.g. select_layers: 3). */
  str(key: string, fallback?: string): string {
    this.used.add(key);
    const v = this.raw[key] ?? fallback;
    if (v === undefined) this.fail(key, 'required');
    if (typeof v === 'number') return String(v);
    if (typeof v !== 'string' || v.trim() === '') this.fail(key, `expected a string, found ${JSON.stringify(v)}`);
    return v;
  }

  oneOf<T extends string>(key: string, allowed: readonly T[], fallback?: T): T {
    this.used.add(key);
    const v = this.raw[key] ?? fallback;
    if (v === undefined) this.fail(key, `required (one of ${allowed.join(', ')})`);
    if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) this.fail(key, `expected one of ${allowed.join(', ')}, found ${JSON.stringify(v)}`);
    return v as T;
  }

  /** A list of names: a YAML/JSON list of strings, or one string separated by `,` or `+`; undefined when absent. */
  list(key: string): string[] | undefined {
    this.used.add(key);
    const v = this.raw[key];
    if (v === undefined) return undefined;
    const items = Array.isArray(v) ? v : typeof v === 'string' ? v.split(/[,+]/) : null;
    if (items === null || items.some((x) => typeof x !== 'string')) this.fail(key, `expected a list of names ("a+b" or [a, b]), found ${JSON.stringify(v)}`);
    const out = (items as string[]).map((x) => x.trim()).filter((x) => x !== '');
    if (out.length === 0) this.fail(key, 'expected at least one name');
    return out;
  }

  /** An N:M pattern such as "2:4". */
  pattern(key: string, fallback?: string): { n: number; m: number } {
    this.used.add(key);
    const v = this.raw[key] ?? fallback;
    const match = typeof v === 'string' ? /^(\d+):(\d+)$/.exec(v) : null;
    if (!match) this.fail(key, `expected a pattern N:M such as "2:4", found ${JSON.stringify(v)}`);
    const n = Number(match[1]);
    const m = Number(match[2]);
    if (n <= 0 || m <= 0 || n > m) this.fail(key, `N:M needs 0 < N ≤ M, found ${n}:${m}`);
    return { n, m };
  }

  /** Call after reading every option: an unknown key is an error, never silently ignored. */
  done(): void {
    for (const k of Object.keys(this.raw)) if (!this.used.has(k)) this.fail(k, 'unknown option for this method');
  }
}
