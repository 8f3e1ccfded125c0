/** Dikē's own version, from package.json (recorded in every result). */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | undefined;

export function dikeVersion(): string {
  if (cached !== undefined) return cached;
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const p = path.join(dir, 'package.json');
    if (existsSync(p)) {
      const pkg = JSON.parse(readFileSync(p, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'dike') return (cached = pkg.version ?? '0.0.0');
    }
    const up = path.dirname(dir);
    if (up === dir) return (cached = '0.0.0');
    dir = up;
  }
}
