/** Small helpers around node:util parseArgs, turning its errors into usage errors. */

export class UsageError extends Error {}

/** Run an argument parse, reporting its failure as a usage error with the command's usage line. */
export function parsing<T>(usage: string, parse: () => T): T {
  try {
    return parse();
  } catch (e) {
    throw new UsageError(`${(e as Error).message}\nusage: ${usage}`);
  }
}

/** --execution simulated|deployed (default simulated). */
export function executionFlag(value: string | undefined): 'simulated' | 'deployed' {
  if (value === undefined || value === 'simulated' || value === 'deployed') return value ?? 'simulated';
  throw new UsageError(`--execution expects simulated or deployed, got "${value}"`);
}

export function positiveInt(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new UsageError(`${flag} expects a positive integer, got "${value}"`);
  return n;
}
