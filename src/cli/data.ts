import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { DikeError } from '../errors.js';
import { DATA_ENV } from '../measure/data.js';
import { fetchDataset, verify } from '../measure/fetch.js';
import { datasets } from '../measure/registry.js';
import { parseFlags, type CommandSpec } from './flags.js';

const spec: CommandSpec = {
  name: 'data',
  summary: 'list benchmark datasets, or download and verify them (dike data fetch <name>)',
  positionals: { usage: '(list | fetch <name>… | fetch --all)', min: 1, max: 64 },
  flags: {
    data: { type: 'string', value: '<dir>', help: `the data directory (default: $${DATA_ENV})` },
    mirror: { type: 'string', value: '<base-url>', help: 'download from a mirror instead of the canonical URLs' },
    force: { type: 'boolean', help: 'download again even when the files verify' },
    all: { type: 'boolean', help: 'fetch every dataset' },
  },
};

function dataDirFrom(explicit: string | undefined): string {
  const dir = explicit ?? process.env[DATA_ENV];
  if (dir === undefined || dir === '') throw new DikeError('', '--data', `no data directory: pass --data <dir> or set ${DATA_ENV}`);
  return dir;
}

export const dataCommand = {
  spec,
  async run(argv: string[]): Promise<void> {
    const args = parseFlags(spec, argv);
    const [verb, ...names] = args.positionals;
    const all = datasets();
    if (verb === 'list') {
      if (names.length > 0) throw args.error(undefined, `"list" takes no names, got "${names[0]}"`);
      if (args.bool('all') || args.has('mirror') || args.bool('force')) throw args.error(args.bool('all') ? '--all' : args.has('mirror') ? '--mirror' : '--force', 'applies to "fetch" only');
      const dir = args.str('data') ?? process.env[DATA_ENV];
      if (dir) {
        let ok = false;
        try {
          ok = statSync(dir).isDirectory();
        } catch {
          ok = false;
        }
        if (!ok) throw new DikeError(dir, '', existsSync(dir) ? 'not a directory' : 'data directory not found');
      }
      for (const ds of all) {
        process.stdout.write(`${ds.name}  (${ds.license}; ${ds.homepage})\n`);
        for (const f of ds.files) {
          let state = '';
          if (dir) {
            const p = path.join(dir, ds.folder, f.path);
            state = existsSync(p) ? (verify(f, readFileSync(p)) === undefined ? '  ok' : '  CHECKSUM MISMATCH') : '  missing';
          }
          process.stdout.write(`  ${f.path}${state}\n`);
        }
      }
      return;
    }
    if (verb !== 'fetch') throw args.error(undefined, `expected "list" or "fetch", got "${verb}"`);
    if (names.length === 0 && !args.bool('all')) throw args.error(undefined, `name a dataset (${all.map((d) => d.name).join(', ')}) or --all`);
    if (names.length > 0 && args.bool('all')) throw args.error('--all', 'give dataset names or --all, not both');
    const unknown = names.find((n) => !all.some((d) => d.name === n));
    if (unknown !== undefined) throw args.error(undefined, `unknown dataset "${unknown}" (available: ${all.map((d) => d.name).join(', ')})`);
    const chosen = args.bool('all') ? all : names.map((n) => all.find((d) => d.name === n)!);
    const dataDir = dataDirFrom(args.str('data'));
    const mirror = args.str('mirror');
    for (const ds of chosen) {
      await fetchDataset(ds, {
        dataDir,
        ...(mirror !== undefined ? { mirror } : {}),
        force: args.bool('force'),
        log: (l) => process.stdout.write(l + '\n'),
      });
    }
  },
};
