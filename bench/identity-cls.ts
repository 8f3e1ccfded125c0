/**
 * Identity bias of pruned classifiers (issue 16 baseline; Proskurina, Metzler & Velcin 2023, "The other
 * side of compression: measuring bias in pruned transformers", IDA 2023: BertForSequenceClassification
 * pruned to ≤ 70% of its weights becomes prone to identity bias while accuracy barely moves).
 *
 * We have no toxicity data set, so this is the closest honest version, on text generated here from
 * Dikē's own word lists (data/testbed/groups.json: 20 group pairs, 20 negative and 20 positive
 * attributes, 10 templates; no benchmark sentence):
 *   1. a sentiment classifier (negative / positive = the attribute's polarity) is fine-tuned from a
 *      masked LM (`--mlm`, e.g. small-bert-mlm) with `dike train --objective sequence-classification`
 *      on templates 1–7, every group term equally often with every attribute (the label carries no
 *      identity information);
 *   2. it is pruned at each `--levels` sparsity with each `--methods` method (`dike compress`);
 *   3. every model scores the held-out templates 8–10: item i = (template, attribute, group pair (a, b)),
 *      a the group the stereotype targets. Counterfactual token fairness (Garg et al. 2019): the item's
 *      gap is g_i = P(negative | a) − P(negative | b) for the same sentence with the group swapped.
 *      Reported per model: accuracy, mean g (signed: > 0 means the targeted group is read as more
 *      negative), mean |g|, and the false-positive-rate gap FPR_a − FPR_b on positive sentences
 *      (predicted negative); Δ vs the unpruned classifier with a paired bootstrap 95% CI over items.
 *
 *   node dist/bench/identity-cls.js --mlm <masked-LM dir> --data <dir with lm_corpus> --out cls-out
 *        [--levels 0.3,0.5,0.7] [--methods magnitude,wanda,sparsegpt] [--steps 300] [--threads 1]
 *
 * Resumable: each model directory that exists is reused.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadCheckpoint } from '../src/model/checkpoint.js';
import { readSafetensors, writeSafetensors, type RawTensor } from '../src/model/safetensors.js';
import { ModelRunner, padBatch } from '../src/runtime/session.js';
import { encodeForClassification } from '../src/train/corpus.js';
import { normal } from '../src/train/init.js';
import { Rng } from '../src/util/rng.js';
import { pairedBootstrapDelta, type PairedStat } from '../src/audit/paired.js';
import { parseFlags, type CommandSpec } from '../src/cli/flags.js';
import { DikeError } from '../src/errors.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** The repository root, from dist/bench/ or bench/. */
const ROOT = path.basename(path.dirname(HERE)) === 'dist' ? path.resolve(HERE, '..', '..') : path.resolve(HERE, '..');
const CLI = path.join(ROOT, 'dist', 'src', 'cli', 'main.js');

export interface Groups {
  pairs: [string, string][];
  negative: string[];
  positive: string[];
  templates: string[];
}

/** Templates 0..TRAIN_TEMPLATES−1 train the classifier; the rest are held out and scored. */
export const TRAIN_TEMPLATES = 7;

const fill = (t: string, group: string, attr: string): string => t.replace('{group}', group).replace('{attr}', attr);

/** Training rows (label<TAB>text): every train template × every group term × every attribute. */
export function trainingRows(g: Groups): string[] {
  const terms = [...new Set(g.pairs.flat())];
  const rows: string[] = [];
  for (const t of g.templates.slice(0, TRAIN_TEMPLATES)) {
    for (const term of terms) {
      for (const a of g.negative) rows.push(`negative\t${fill(t, term, a)}`);
      for (const a of g.positive) rows.push(`positive\t${fill(t, term, a)}`);
    }
  }
  return rows;
}

export interface CtfItem {
  id: string;
  /** 0 negative, 1 positive. */
  label: number;
  /** The sentence with the targeted group (a) and with the contrasting group (b). */
  a: string;
  b: string;
}

/** Scored items: held-out template × attribute × group pair. */
export function testItems(g: Groups): CtfItem[] {
  const items: CtfItem[] = [];
  g.templates.slice(TRAIN_TEMPLATES).forEach((t, ti) => {
    for (const [label, attrs] of [[0, g.negative], [1, g.positive]] as const) {
      for (const attr of attrs) {
        g.pairs.forEach(([a, b], pi) => items.push({ id: `t${TRAIN_TEMPLATES + ti}.${attr}.p${pi}`, label, a: fill(t, a, attr), b: fill(t, b, attr) }));
      }
    }
  });
  return items;
}

/** Per-item values of one model from its P(negative) on each item's two sentences. */
export interface ItemValues {
  /** g_i = P(neg | a) − P(neg | b). */
  gap: Float64Array;
  absGap: Float64Array;
  /** 1 when the a- and b-sentences are both classified correctly, ½ when one is, 0 when none (mean = accuracy). */
  correct: Float64Array;
  /** On positive items: 1[pred neg | a] − 1[pred neg | b] (its mean over positive items is FPR_a − FPR_b); NaN elsewhere. */
  fpGap: Float64Array;
}

export function itemValues(items: readonly CtfItem[], pNegA: ArrayLike<number>, pNegB: ArrayLike<number>): ItemValues {
  const n = items.length;
  const v: ItemValues = { gap: new Float64Array(n), absGap: new Float64Array(n), correct: new Float64Array(n), fpGap: new Float64Array(n) };
  for (let i = 0; i < n; i++) {
    const pa = pNegA[i]!;
    const pb = pNegB[i]!;
    v.gap[i] = pa - pb;
    v.absGap[i] = Math.abs(pa - pb);
    const predA = pa > 0.5 ? 0 : 1;
    const predB = pb > 0.5 ? 0 : 1;
    v.correct[i] = ((predA === items[i]!.label ? 1 : 0) + (predB === items[i]!.label ? 1 : 0)) / 2;
    v.fpGap[i] = items[i]!.label === 1 ? (predA === 0 ? 1 : 0) - (predB === 0 ? 1 : 0) : NaN;
  }
  return v;
}

/** Mean over the non-NaN values at idx (the FPR gap is defined on positive items only). */
export const meanDefinedAt: PairedStat = (values, idx) => {
  let s = 0;
  let k = 0;
  for (let i = 0; i < idx.length; i++) {
    const x = values[idx[i]!]!;
    if (!Number.isNaN(x)) {
      s += x;
      k++;
    }
  }
  return k === 0 ? NaN : s / k;
};

/** A classifier directory from a masked LM: its encoder weights plus a seeded pooler and 2-label head. */
function classifierFromMlm(mlm: string, out: string, seed: number): void {
  const ckpt = loadCheckpoint(mlm);
  if (ckpt.family.name !== 'bert' || ckpt.task !== 'masked-lm') throw new DikeError(path.join(mlm, 'config.json'), '"architectures"', `--mlm must be a BERT masked LM (this is ${ckpt.hfClass})`);
  mkdirSync(out, { recursive: true });
  const config = JSON.parse(readFileSync(path.join(mlm, 'config.json'), 'utf8')) as Record<string, unknown>;
  Object.assign(config, { architectures: ['BertForSequenceClassification'], num_labels: 2, id2label: { 0: 'negative', 1: 'positive' }, label2id: { negative: 0, positive: 1 } });
  const tensors = new Map<string, RawTensor>();
  for (const f of ckpt.weightFiles) for (const [k, t] of readSafetensors(f).tensors) if (!k.startsWith('cls.')) tensors.set(k, t);
  const H = ckpt.shape.hiddenSize;
  const std = typeof config['initializer_range'] === 'number' ? (config['initializer_range'] as number) : 0.02;
  const rng = new Rng(seed);
  const f32 = (a: Float32Array, shape: number[]): RawTensor => ({ dtype: 'F32', shape, bytes: new Uint8Array(a.buffer, a.byteOffset, a.byteLength) });
  tensors.set('bert.pooler.dense.weight', f32(normal(rng, H * H, std), [H, H]));
  tensors.set('bert.pooler.dense.bias', f32(new Float32Array(H), [H]));
  tensors.set('classifier.weight', f32(normal(rng, 2 * H, std), [2, H]));
  tensors.set('classifier.bias', f32(new Float32Array(2), [2]));
  writeSafetensors(path.join(out, 'model.safetensors'), tensors);
  writeFileSync(path.join(out, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  for (const f of ['vocab.txt', 'tokenizer_config.json', 'special_tokens_map.json', 'tokenizer.json']) {
    if (existsSync(path.join(mlm, f))) writeFileSync(path.join(out, f), readFileSync(path.join(mlm, f)));
  }
}

function dike(args: string[]): void {
  process.stderr.write(`$ dike ${args.join(' ')}\n`);
  const r = spawnSync(process.execPath, [CLI, ...args], { stdio: 'inherit' });
  if (r.status !== 0) throw new DikeError('', `dike ${args[0]}`, `exited with ${r.status}`);
}

/** P(negative) of each text, batched. */
async function pNegative(dir: string, texts: readonly string[], threads: number | undefined): Promise<Float64Array> {
  const m = loadCheckpoint(dir);
  const runner = await ModelRunner.create(m, threads !== undefined ? { threads } : {});
  const tok = m.tokenizer;
  const H = m.shape.hiddenSize;
  const out = new Float64Array(texts.length);
  const B = 64;
  for (let s = 0; s < texts.length; s += B) {
    const ids = texts.slice(s, s + B).map((t) => encodeForClassification(tok, t, 64));
    const batch = padBatch(ids, tok.special.pad ?? 0);
    const [h] = await runner.hidden(batch);
    const rows = new Float32Array(ids.length * H);
    for (let r = 0; r < ids.length; r++) rows.set(h!.subarray(r * batch.seq * H, r * batch.seq * H + H), r * H);
    const logits = await runner.logits(rows, ids.length);
    for (let r = 0; r < ids.length; r++) {
      const l0 = logits[2 * r]!;
      const l1 = logits[2 * r + 1]!;
      out[s + r] = 1 / (1 + Math.exp(l1 - l0));
    }
  }
  await runner.dispose();
  return out;
}

const spec: CommandSpec = {
  name: 'identity-cls',
  summary: 'identity bias of pruned classifiers (Proskurina et al. 2023): counterfactual token fairness on group-swapped sentences',
  flags: {
    mlm: { type: 'string', help: 'the BERT masked LM the classifier starts from (required)' },
    data: { type: 'string', help: 'data directory holding lm_corpus/train.txt (calibration of wanda/sparsegpt) (required)' },
    out: { type: 'string', default: 'identity-cls-out', help: 'output directory (resumable)' },
    levels: { type: 'list', default: '0.3,0.5,0.7', help: 'sparsities' },
    methods: { type: 'list', default: 'magnitude,wanda,sparsegpt', help: 'pruning methods' },
    steps: { type: 'int', min: 1, default: 300, help: 'fine-tuning steps of the classifier' },
    seed: { type: 'int', min: 0, default: 0, help: 'seed' },
    threads: { type: 'int', min: 1, max: 256, help: 'threads' },
  },
};

async function main(argv: string[]): Promise<void> {
  const args = parseFlags(spec, argv);
  const mlm = args.str('mlm');
  const data = args.str('data');
  if (mlm === undefined) throw new DikeError('', '--mlm', 'required: a BERT masked-LM directory');
  if (data === undefined) throw new DikeError('', '--data', 'required: the data directory (lm_corpus/train.txt)');
  const out = args.str('out')!;
  const threads = args.num('threads');
  const seed = args.num('seed')!;
  const t = (): string[] => (threads !== undefined ? ['--threads', String(threads)] : []);
  const groups = JSON.parse(readFileSync(path.join(ROOT, 'data', 'testbed', 'groups.json'), 'utf8')) as Groups;
  mkdirSync(out, { recursive: true });
  const trainFile = path.join(out, 'train.tsv');
  writeFileSync(trainFile, trainingRows(groups).join('\n') + '\n');
  const items = testItems(groups);
  const validFile = path.join(out, 'valid.tsv');
  writeFileSync(validFile, items.filter((_, i) => i % 10 === 0).map((it) => `${it.label === 0 ? 'negative' : 'positive'}\t${it.a}`).join('\n') + '\n');
  const base = path.join(out, 'base');
  if (!existsSync(path.join(base, 'config.json'))) classifierFromMlm(mlm, base, seed);
  const dense = path.join(out, 'dense');
  if (!existsSync(path.join(dense, 'training.json'))) {
    dike(['train', '--model', base, '--objective', 'sequence-classification', '--data', trainFile, '--valid', validFile, '--seq', '32', '--batch', '32',
      '--steps', String(args.num('steps')), '--lr', '1e-4', '--warmup', '20', '--seed', String(seed), '--log-every', '50', ...t(), '--out', dense]);
  }
  const models: { name: string; dir: string }[] = [{ name: 'dense', dir: dense }];
  for (const method of args.list('methods')!) {
    for (const level of args.list('levels')!) {
      const dir = path.join(out, `${method}-${level}`);
      if (!existsSync(path.join(dir, 'config.json'))) {
        dike(['compress', dense, '--method', method, '--sparsity', level, '--data', data, '--seed', String(seed), ...t(), '--out', dir]);
      }
      models.push({ name: `${method} ${Math.round(100 * Number(level))}%`, dir });
    }
  }
  const values: ItemValues[] = [];
  for (const m of models) {
    const pa = await pNegative(m.dir, items.map((i) => i.a), threads);
    const pb = await pNegative(m.dir, items.map((i) => i.b), threads);
    values.push(itemValues(items, pa, pb));
    process.stderr.write(`scored ${m.name}\n`);
  }
  const f = (x: number, d = 3): string => (x >= 0 ? '+' : '−') + Math.abs(x).toFixed(d);
  const ci = (d: { delta: number; ci95: [number, number] }, k = 3): string => `${f(d.delta, k)} [${f(d.ci95[0], k)}, ${f(d.ci95[1], k)}]`;
  const lines = [
    `${items.length} held-out items (3 templates × 40 attributes × 20 group pairs); Δ = pruned − dense, paired bootstrap 95% CI over items (10,000 resamples).`,
    '',
    '| model | accuracy | Δ accuracy | mean g | Δ mean g [95% CI] | mean \\|g\\| | Δ mean \\|g\\| [95% CI] | FPR_a − FPR_b | Δ FPR gap [95% CI] |',
    '|---|---:|---|---:|---|---:|---|---:|---|',
  ];
  const results: Record<string, unknown>[] = [];
  models.forEach((m, k) => {
    const v = values[k]!;
    const d = values[0]!;
    const o = { seed: 20260101, resamples: 10000 };
    const acc = pairedBootstrapDelta(d.correct, v.correct, o);
    const gap = pairedBootstrapDelta(d.gap, v.gap, o);
    const abs = pairedBootstrapDelta(d.absGap, v.absGap, o);
    const fp = pairedBootstrapDelta(d.fpGap, v.fpGap, { ...o, stat: meanDefinedAt });
    results.push({ model: m.name, dir: path.relative(out, m.dir), accuracy: acc, gap, absGap: abs, fprGap: fp });
    const same = k === 0;
    lines.push(`| ${m.name} | ${(100 * acc.compressed).toFixed(1)}% | ${same ? '—' : ci({ delta: 100 * acc.delta, ci95: [100 * acc.ci95[0], 100 * acc.ci95[1]] }, 1)} | ${f(gap.compressed)} | ${same ? '—' : ci(gap)} | ${abs.compressed.toFixed(3)} | ${same ? '—' : ci(abs)} | ${f(fp.compressed)} | ${same ? '—' : ci(fp)} |`);
  });
  writeFileSync(path.join(out, 'results.json'), JSON.stringify({ items: items.length, results }, null, 2) + '\n');
  process.stdout.write(lines.join('\n') + '\n');
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === path.resolve(fileURLToPath(import.meta.url))) {
  main(process.argv.slice(2)).catch((e: unknown) => {
    process.stderr.write(`identity-cls: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(e instanceof DikeError ? 1 : 2);
  });
}
