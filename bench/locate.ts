/**
 * `dike locate` figures: precision@1 of the planted-bias experiment and the speed of leave-one-in and
 * of the first-order prediction.
 *
 *   npm run build && node dist/bench/locate.js planted [--models dike-bert-mini,dike-gpt2-mini] [--seeds 10] [--limit 200] [--threads 2] [--tag name]
 *   npm run build && node dist/bench/locate.js speed [--variant magnitude:sparsity=0.5] [--limit N] [--predict-only]
 *
 * speed prints wall and CPU seconds (all threads) and the load average before and after: on a shared
 * machine the CPU seconds are the comparable figure.
 *
 * planted: for each model and seed, plantedTrial (src/locate/plant.ts) hides an association in the
 * unit's pruned entries and checks the rank of the planted unit by |measured Δ| and |predicted Δ|.
 * Writes bench/out/locate-planted.json and prints a Markdown table.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import path from 'node:path';
import { embeddedDataDir, resolveModel } from '../src/embedded.js';
import { parseVariant } from '../src/audit/audit.js';
import { runLocate } from '../src/locate/locate.js';
import { plantedTrial, type PlantedTrial } from '../src/locate/plant.js';

function flag(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : def;
}

const OUT = path.resolve('bench', 'out');
const threads = Number(flag('threads', '2'));

async function planted(): Promise<void> {
  const models = flag('models', 'dike-bert-mini,dike-gpt2-mini').split(',');
  const seeds = Number(flag('seeds', '10'));
  const limit = Number(flag('limit', '200'));
  const sparsity = Number(flag('sparsity', '0.5'));
  const fraction = Number(flag('fraction', '1'));
  const work = path.join(OUT, `locate-planted-work${flag('tag', '') ? '-' + flag('tag', '') : ''}`);
  mkdirSync(work, { recursive: true });
  const trials: PlantedTrial[] = [];
  for (const m of models) {
    for (let seed = 1; seed <= seeds; seed++) {
      const t = await plantedTrial({ model: resolveModel(m).dir, seed, dataDir: embeddedDataDir(), work, limit, sparsity, fraction, threads });
      trials.push(t);
      process.stderr.write(`${JSON.stringify(t)}\n`);
      writeFileSync(path.join(OUT, `locate-planted${flag('tag', '') ? '-' + flag('tag', '') : ''}.partial.json`), JSON.stringify(trials, null, 2) + '\n');
    }
  }
  const lines = ['| model | seeds | precision@1 measured | precision@1 predicted | mean Spearman (predicted, measured Δ score) |', '|---|---|---|---|---|'];
  for (const m of [...models, 'all']) {
    const ts = trials.filter((t) => m === 'all' || t.model === path.basename(resolveModel(m).dir));
    const p1 = (k: 'rankMeasured' | 'rankPredicted'): string => (ts.filter((t) => t[k] === 1).length / ts.length).toFixed(2);
    const sp = ts.map((t) => t.spearman).filter((x): x is number => x !== null);
    lines.push(`| ${m} | ${ts.length} | ${p1('rankMeasured')} | ${p1('rankPredicted')} | ${(sp.reduce((s, x) => s + x, 0) / sp.length).toFixed(2)} |`);
  }
  writeFileSync(path.join(OUT, `locate-planted${flag('tag', '') ? '-' + flag('tag', '') : ''}.json`), JSON.stringify({ limit, sparsity, fraction, trials }, null, 2) + '\n');
  process.stdout.write(lines.join('\n') + '\n');
}

async function speed(): Promise<void> {
  const variant = flag('variant', 'magnitude:sparsity=0.5');
  const limitArg = flag('limit', '');
  const out = path.join(OUT, `locate-speed-${Date.now()}`);
  const load0 = loadavg()[0]!.toFixed(1);
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const r = await runLocate({
    model: resolveModel(flag('model', 'dike-bert-mini')).dir,
    variant: parseVariant(variant, undefined, 0),
    benchmarks: ['crows-pairs'],
    dataDir: embeddedDataDir(),
    out,
    unit: 'layer-module',
    seed: 0,
    resamples: 1000,
    alpha: 0.05,
    ...(limitArg !== '' ? { limit: Number(limitArg) } : {}),
    threads,
    qualityLines: 0,
    leaveOneOut: false,
    predictOnly: process.argv.includes('--predict-only'),
  });
  const cpu = process.cpuUsage(c0);
  const b = r.benchmarks[0]!;
  process.stdout.write(
    `${variant}, ${b.units.length} layer-module units, ${b.objective?.items ?? '?'} items: total ${((performance.now() - t0) / 1000).toFixed(1)} s ` +
      `(prediction ${b.objective?.seconds.toFixed(1)} s); Spearman(predicted, measured Δ score) ${b.spearman_predicted_score_delta?.toFixed(3) ?? 'n/a (predict-only)'}, ` +
      `(predicted, measured Δ %) ${b.spearman_predicted_measured?.toFixed(3) ?? 'n/a'}; CPU ${((cpu.user + cpu.system) / 1e6).toFixed(1)} s; load ${load0} → ${loadavg()[0]!.toFixed(1)}\n`,
  );
}

const what = process.argv[2];
if (what === 'planted') await planted();
else if (what === 'speed') await speed();
else process.stderr.write('usage: node dist/bench/locate.js planted|speed [options]\n');
