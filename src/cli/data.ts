import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { DikeError } from '../errors.js';
import { DATA_ENV } from '../measure/data.js';
import { fetchDataset, verify } from '../measure/fetch.js';
import { datasets } from '../measure/registry.js';
import { parsing, UsageError } from './args.js';

const usage = 'dike data (list | fetch <name>… | fetch --all) [--data <dir>] [--mirror <base-url>] [--force]';

function dataDirFrom(explicit: string | undefined): string {
  const dir = explicit ?? process.env[DATA_ENV];
  if (dir === undefined || dir === '') throw new DikeError('', '--data', `no data directory: pass --data <dir> or set ${DATA_ENV}`);
  return dir;
}

export const dataCommand = {
  summary: 'list benchmark datasets, or download and verify them (dike data fetch <name>)',
  usage,
  async run(argv: string[]): Promise<void> {
    const { values, positionals } = parsing(usage, () =>
      parseArgs({
        args: argv,
        allowPositionals: true,
        strict: true,
        options: { data: { type: 'string' }, mirror: { type: 'string' }, force: { type: 'boolean' }, all: { type: 'boolean' } },
      }),
    );
    const [verb, ...names] = positionals;
    const all = datasets();
    if (verb === 'list') {
      const dir = values.data ?? process.env[DATA_ENV];
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
    if (verb !== 'fetch') throw new UsageError(`expected "list" or "fetch"\nusage: ${usage}`);
    if (names.length === 0 && !values.all) throw new UsageError(`name a dataset (${all.map((d) => d.name).join(', ')}) or --all\nusage: ${usage}`);
    const chosen = values.all ? all : names.map((n) => all.find((d) => d.name === n) ?? (() => { throw new UsageError(`unknown dataset "${n}" (available: ${all.map((d) => d.name).join(', ')})`); })());
    const dataDir = dataDirFrom(values.data);
    for (const ds of chosen) {
      await fetchDataset(ds, {
        dataDir,
        ...(values.mirror !== undefined ? { mirror: values.mirror } : {}),
        force: values.force === true,
        log: (l) => process.stdout.write(l + '\n'),
      });
    }
  },
};
