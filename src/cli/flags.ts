/**
 * The one flag parser of the `dike` command line. A command declares its options as a table (name,
 * type, range, default, help); `parseFlags` reads argv against it, converts and validates every value,
 * and `helpText` writes the usage from the same table, so what `--help` says is what is checked.
 *
 * Every problem is a UsageError of one line: `dike <cmd>: --flag: problem (see dike <cmd> --help)`,
 * raised before the command does any work or prints anything.
 */

export class UsageError extends Error {}

export type FlagType =
  | 'string' // any text (a path, a name, a spec)
  | 'boolean' // present or absent; takes no value
  | 'int' // an integer within [min, max]
  | 'number' // a finite number within [min, max] (or exclusive bounds)
  | 'enum' // one of `choices`
  | 'list' // comma-separated strings (each one of `choices` when given)
  | 'int-list'; // comma-separated integers within [min, max]

export interface FlagSpec {
  type: FlagType;
  help: string;
  /** The value's name in the usage text (default: from the type). */
  value?: string;
  /** May be given more than once; the values are collected in order. */
  multiple?: boolean;
  required?: boolean;
  /** Applied when the flag is absent (shown in the help). */
  default?: string | number | boolean;
  choices?: readonly string[];
  min?: number;
  max?: number;
  /** Bounds that the value may not equal (e.g. (0, 1) for --alpha). */
  exclusiveMin?: boolean;
  exclusiveMax?: boolean;
}

export interface CommandSpec {
  name: string;
  summary: string;
  /** How positional arguments read in the usage line, e.g. `<model-dir>`. */
  positionals?: { usage: string; min: number; max: number; help?: string };
  flags: Readonly<Record<string, FlagSpec>>;
  /** Extra lines for the help (constraints between flags, examples). */
  notes?: readonly string[];
}

export type FlagValue = string | number | boolean | string[] | number[];

/** A parsed command line: typed accessors over the converted values. */
export class Parsed {
  constructor(
    readonly spec: CommandSpec,
    /** Converted values of given flags (and defaults of absent ones); `multiple` flags are arrays. */
    readonly values: Record<string, FlagValue | FlagValue[] | undefined>,
    readonly positionals: string[],
    /** The flags given on the command line (not filled from a default). */
    readonly given: Set<string>,
  ) {}

  private get(name: string): FlagValue | FlagValue[] | undefined {
    if (!Object.hasOwn(this.spec.flags, name)) throw new Error(`dike ${this.spec.name}: no flag --${name} in its table`);
    return this.values[name];
  }
  str(name: string): string | undefined {
    return this.get(name) as string | undefined;
  }
  num(name: string): number | undefined {
    return this.get(name) as number | undefined;
  }
  bool(name: string): boolean {
    return this.get(name) === true;
  }
  list(name: string): string[] | undefined {
    return this.get(name) as string[] | undefined;
  }
  ints(name: string): number[] | undefined {
    return this.get(name) as number[] | undefined;
  }
  /** Every value of a `multiple` string flag, in order. */
  all(name: string): string[] {
    return (this.get(name) as string[] | undefined) ?? [];
  }
  has(name: string): boolean {
    return this.given.has(name);
  }
  /** A one-line usage error for this command. */
  error(flag: string | undefined, problem: string): UsageError {
    return usageError(this.spec, flag, problem);
  }
}

/** A one-line usage error for `spec`, naming the flag (or nothing) and the problem. */
export function usageError(spec: CommandSpec, flag: string | undefined, problem: string): UsageError {
  return new UsageError(`dike ${spec.name}: ${flag ? `${flag}: ` : ''}${problem} (see dike ${spec.name} --help)`);
}

function describeType(f: FlagSpec): string {
  const range = (): string => {
    const lo = f.min === undefined ? '' : `${f.exclusiveMin ? '>' : '≥'} ${f.min}`;
    const hi = f.max === undefined ? '' : `${f.exclusiveMax ? '<' : '≤'} ${f.max}`;
    return [lo, hi].filter((s) => s !== '').join(' and ');
  };
  switch (f.type) {
    case 'int': {
      if (f.min !== undefined && f.max !== undefined) return `an integer from ${f.min} to ${f.max}`;
      const r = range();
      return f.min === 1 && f.max === undefined ? 'a positive integer' : f.min === 0 && f.max === undefined ? 'a non-negative integer' : `an integer${r ? ` ${r}` : ''}`;
    }
    case 'number': {
      const r = range();
      return `a number${r ? ` ${r}` : ''}`;
    }
    case 'enum':
      return `one of ${f.choices!.join(', ')}`;
    case 'list':
      return f.choices ? `a comma-separated list of ${f.choices.join(', ')}` : 'a comma-separated list';
    case 'int-list': {
      const r = range();
      return `a comma-separated list of integers${r ? ` ${r}` : ''}`;
    }
    default:
      return 'a value';
  }
}

/** Convert and check one raw value of flag `name`; returns the problem as a string when it is bad. */
export function convertValue(f: FlagSpec, raw: string): FlagValue | { problem: string } {
  const bad = { problem: `expected ${describeType(f)}, got "${raw}"` };
  const inRange = (n: number): boolean =>
    (f.min === undefined || (f.exclusiveMin ? n > f.min : n >= f.min)) && (f.max === undefined || (f.exclusiveMax ? n < f.max : n <= f.max));
  const integer = (s: string): number | undefined => {
    const t = s.trim();
    if (!/^[+-]?\d+$/.test(t)) return undefined;
    const n = Number(t);
    return Number.isSafeInteger(n) && inRange(n) ? n : undefined;
  };
  switch (f.type) {
    case 'string':
      return raw;
    case 'boolean':
      return true;
    case 'int': {
      const n = integer(raw);
      return n === undefined ? bad : n;
    }
    case 'number': {
      const t = raw.trim();
      const n = t === '' ? NaN : Number(t);
      return Number.isFinite(n) && inRange(n) ? n : bad;
    }
    case 'enum':
      return f.choices!.includes(raw) ? raw : bad;
    case 'list': {
      const items = raw.split(',').map((s) => s.trim()).filter((s) => s !== '');
      if (items.length === 0) return bad;
      const wrong = f.choices ? items.find((s) => !f.choices!.includes(s)) : undefined;
      return wrong === undefined ? items : { problem: `unknown item "${wrong}" (expected ${describeType(f)})` };
    }
    case 'int-list': {
      const parts = raw.split(',').map((s) => s.trim()).filter((s) => s !== '');
      const nums = parts.map(integer);
      return parts.length > 0 && nums.every((n) => n !== undefined) ? (nums as number[]) : bad;
    }
  }
}

/** Parse `argv` against the command's table: every flag known, every value valid, positionals counted. */
export function parseFlags(spec: CommandSpec, argv: readonly string[]): Parsed {
  const values: Parsed['values'] = {};
  const given = new Set<string>();
  const positionals: string[] = [];
  let onlyPositionals = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (onlyPositionals || !arg.startsWith('-') || arg === '-' || /^-\d/.test(arg)) {
      positionals.push(arg);
      continue;
    }
    if (arg === '--') {
      onlyPositionals = true;
      continue;
    }
    if (!arg.startsWith('--')) throw usageError(spec, arg, 'unknown option (options are spelled --name)');
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    const f = Object.hasOwn(spec.flags, name) ? spec.flags[name] : undefined;
    const flag = `--${name}`;
    if (f === undefined) throw usageError(spec, flag, 'unknown option');
    let raw: string;
    if (f.type === 'boolean') {
      if (eq >= 0) throw usageError(spec, flag, 'takes no value');
      raw = '';
    } else if (eq >= 0) {
      raw = arg.slice(eq + 1);
    } else {
      const next = argv[i + 1];
      if (next === undefined || (next.startsWith('--') && next.length > 2)) throw usageError(spec, flag, f.type === 'string' ? `needs a value (${f.value ?? 'a value'})` : `needs a value (${describeType(f)})`);
      raw = next;
      i++;
    }
    const v = convertValue(f, raw);
    if (typeof v === 'object' && !Array.isArray(v)) throw usageError(spec, flag, v.problem);
    if (f.multiple) {
      ((values[name] ??= []) as FlagValue[]).push(v);
    } else {
      if (given.has(name)) throw usageError(spec, flag, 'given more than once');
      values[name] = v;
    }
    given.add(name);
  }
  for (const [name, f] of Object.entries(spec.flags)) {
    if (given.has(name)) continue;
    if (f.required) throw usageError(spec, `--${name}`, 'is required');
    if (f.type === 'boolean') values[name] = false;
    else if (f.multiple) values[name] = [];
    else if (f.default !== undefined) {
      const v = convertValue(f, String(f.default));
      values[name] = typeof v === 'object' && !Array.isArray(v) ? undefined : v;
    }
  }
  const p = spec.positionals ?? { usage: '', min: 0, max: 0 };
  if (positionals.length > p.max) {
    throw usageError(spec, undefined, p.max === 0 ? `unexpected argument "${positionals[0]}"` : `unexpected argument "${positionals[p.max]}" (expected ${p.usage})`);
  }
  if (positionals.length < p.min) throw usageError(spec, undefined, `expected ${p.usage}`);
  return new Parsed(spec, values, positionals, given);
}

function flagUsage(name: string, f: FlagSpec): string {
  const value = f.type === 'boolean' ? '' : ` ${f.value ?? (f.type === 'enum' ? f.choices!.join('|') : f.type === 'int' || f.type === 'number' ? 'N' : f.type.includes('list') ? 'A,B,…' : 'VALUE')}`;
  return `--${name}${value}`;
}

/** The one-line synopsis: `dike <cmd> <positionals> --required … [--optional …]`. */
export function usageLine(spec: CommandSpec): string {
  const parts = [`dike ${spec.name}`];
  if (spec.positionals?.usage) parts.push(spec.positionals.usage);
  for (const [name, f] of Object.entries(spec.flags)) {
    const u = flagUsage(name, f) + (f.multiple ? '…' : '');
    parts.push(f.required ? u : `[${u}]`);
  }
  return parts.join(' ');
}

/** `dike <cmd> --help`: synopsis, summary, one line per flag (type, default), notes. */
export function helpText(spec: CommandSpec): string {
  const lines = [`usage: ${usageLine(spec)}`, '', spec.summary, ''];
  if (spec.positionals?.help) lines.push(`  ${spec.positionals.usage.padEnd(34)} ${spec.positionals.help}`);
  const entries = Object.entries(spec.flags);
  for (const [name, f] of entries) {
    const u = flagUsage(name, f);
    const facts: string[] = [];
    if (f.type !== 'boolean' && f.type !== 'string' && f.type !== 'enum') facts.push(describeType(f));
    if (f.default !== undefined && f.type !== 'boolean') facts.push(`default ${f.default}`);
    if (f.required) facts.push('required');
    if (f.multiple) facts.push('repeatable');
    lines.push(`  ${u.padEnd(34)} ${f.help}${facts.length ? ` (${facts.join('; ')})` : ''}`);
  }
  if (spec.notes?.length) lines.push('', ...spec.notes);
  return lines.join('\n');
}
