/**
 * `npm run bench`: every section of bench/RESULTS.md, one script after another, each in its own
 * process (so that no section's memory or threads leak into the next): run.ts (forward, forward-real,
 * pll), crows.ts, gptq.ts (calibration + GPTQ), train.ts, profile.ts, scaling.ts, memory.ts. Each
 * script writes its own section; a failing script is reported and the rest still run (exit status 1
 * at the end). Writes the `bench-all` section: which scripts ran, how long each took, the load.
 *
 *   npm run bench [-- --threads N] [-- --only run,crows,…]
 */
import { spawnSync } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { writeMarkedSection, ROOT, RESULTS } from './machine.js';

const SCRIPTS = ['run', 'crows', 'gptq', 'train', 'profile', 'scaling', 'memory'] as const;
const BEGIN = '<!-- bench-all:begin (written by bench/all.ts) -->';
const END = '<!-- bench-all:end -->';

const { values } = parseArgs({ options: { threads: { type: 'string' }, only: { type: 'string' } } });
const chosen = values.only !== undefined ? values.only.split(',') : [...SCRIPTS];
for (const c of chosen) if (!(SCRIPTS as readonly string[]).includes(c)) throw new Error(`--only: unknown script ${c} (${SCRIPTS.join(', ')})`);
const started = Date.now();
const done: { script: string; minutes: number; ok: boolean; load: string }[] = [];
for (const s of chosen) {
  const t0 = Date.now();
  console.log(`\n=== bench/${s}.ts ===`);
  const r = spawnSync(process.execPath, [path.join(ROOT, 'dist', 'bench', `${s}.js`), ...(values.threads !== undefined ? ['--threads', values.threads] : [])], { stdio: 'inherit' });
  done.push({ script: s, minutes: (Date.now() - t0) / 60000, ok: r.status === 0, load: os.loadavg().map((x) => x.toFixed(1)).join(' / ') });
  if (r.status !== 0) console.error(`bench/${s}.ts failed (exit ${r.status ?? r.signal})`);
}
const total = (Date.now() - started) / 60000;
const section = [
  BEGIN,
  '## This run of `npm run bench`',
  '',
  `bench/all.ts, ended ${new Date().toISOString().replace(/\.\d+Z$/, 'Z')}, ${total.toFixed(1)} min in all. Each script wrote its own section above; the load average (1 / 5 / 15 min) when each ended shows whether other work shared the cores.`,
  '',
  '| script | minutes | load average at its end | status |',
  '|---|---:|---|---|',
  ...done.map((d) => `| bench/${d.script}.ts | ${d.minutes.toFixed(1)} | ${d.load} | ${d.ok ? 'ok' : '**failed**'} |`),
  END,
].join('\n');
writeMarkedSection(RESULTS, BEGIN, END, section);
console.log(`\nnpm run bench: ${total.toFixed(1)} min; ${done.filter((d) => !d.ok).length} failed`);
if (done.some((d) => !d.ok)) process.exitCode = 1;
