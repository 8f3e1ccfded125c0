/**
 * CrowS-Pairs `nangia-pll` speed: Dikē's real benchmark (`crowsPairs.run`, src/measure/crows-pairs.ts)
 * against two PyTorch implementations of the same metric (bench/torch_crows.py), in the same run,
 * on the same token ids and the same scored positions:
 *
 *   torch-bs1      as nyu-mll/crows-pairs metric.py and bias-bench run it: one forward per masked
 *                  copy (batch size 1), MLM head over every position, log_softmax at the masked row.
 *   torch-batched  the masked copies of several sentences in one batch (the same length buckets
 *                  Dikē forms), head + log_softmax only at the masked rows.
 *
 * Writes the "CrowS-Pairs nangia-pll" section of bench/RESULTS.md (between <!-- crows:begin -->
 * and <!-- crows:end -->; the rest of the file is kept), or with --quick a smoke-run section in
 * bench/out/RESULTS-crows-quick.md.
 *
 *   npm run bench:crows -- [--threads N] [--only small|base] [--quick] [--pairs N] [--bs1-pairs N]
 *                          [--chunk N] [--python /usr/bin/python3] [--openblas-coretype NAME]
 *
 * How it is timed. The first N pairs are cut into chunks (64 pairs for the small model:
 * crows-pairs.ts scores 64 pairs per batched call, so the Dikē computation is then the same as one
 * `run` over N pairs; 8 for the BERT-base-size model, to keep its run short); each chunk is
 * written as its own copy of the CSV, and for each chunk the sides run one after the other, the
 * order rotating from chunk to chunk, with a 250 ms pause after each, so that changes in machine
 * load hit all sides alike. A side's time is the sum of its chunk times; pairs/s = pairs ÷ that
 * time. torch-bs1 is slow, so it runs only the first chunks (--bs1-pairs, rounded up to whole
 * chunks); the ratio Dikē/torch-bs1 compares the two sides' times on exactly those chunks. Before
 * timing, each side scores the first 2 pairs once, untimed (warm-up).
 *
 * The Dikē time is the whole `crowsPairs.run` call: reading and parsing the CSV, tokenization,
 * difflib alignment and the model (bootstrap resamples set to 0: the confidence intervals are not
 * part of the scoring). The PyTorch time covers only the model work on the ids given in the
 * workload file.
 *
 * Checks: the positions Dikē masked (recorded from the batches it sent to onnxruntime, outside
 * the timed region) must be exactly the workload's; every pair's two sentence scores must agree
 * between Dikē and each PyTorch side within 1e-3; and the metric (100 · hits / pairs, metric.py's
 * rounding to 3 decimals done on each side) must be equal.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { parse } from 'csv-parse/sync';
import { loadCheckpoint, type Checkpoint } from '../src/model/checkpoint.js';
import { readJsonObject } from '../src/model/config.js';
import { ModelRunner, type PaddedBatch } from '../src/runtime/session.js';
import { MASKED_MAX_TOKENS, maskedBuckets } from '../src/score/masked.js';
import { crowsPairs, parseCrowsPairs, type CrowsPair } from '../src/measure/crows-pairs.js';
import { sharedTemplates } from '../src/measure/difflib.js';
import { DEFAULT_SEED } from '../src/measure/stats/bootstrap.js';
import { maskAndPadIds } from '../src/score/text.js';
import { TorchServer, type TorchInfo } from './torch-server.js';
import { sleep, torchEnv, writeMarkedSection, startRun, ensureBaseModel, runFacts, type RunFacts } from './machine.js';
import { ensureRandomBert } from './random-bert.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const SHARED = path.join(ROOT, '..', 'shared');
const OUT = path.join(ROOT, 'bench', 'out');
const RESULTS = path.join(ROOT, 'bench', 'RESULTS.md');
const QUICK_RESULTS = path.join(OUT, 'RESULTS-crows-quick.md');
const DATA = path.join(SHARED, 'data');
const CSV = path.join(DATA, 'crows-pairs', 'crows_pairs_anonymized.csv');
const SMALL = path.join(SHARED, 'models', 'small-bert-mlm');
const BASE = path.join(OUT, 'bert-base-random');
/** Per-chunk copies of the CSV, one data directory each. */
const CHUNK_DATA = path.join(OUT, 'crows-chunks');

const BEGIN = '<!-- crows:begin -->';
const END = '<!-- crows:end -->';
/** crows-pairs.ts's own batch of pairs (its CHUNK): a chunk of this size is one batched call there. */
const DIKE_CHUNK = 64;
/** Pairs each side scores once, untimed, before the timed chunks. */
const WARMUP_PAIRS = 2;
const SETTLE_MS = 250;
/** Largest allowed |Δ| between two sides' sentence scores (summed log-probabilities). */
const SCORE_TOL = 1e-3;

type Side = 'dike' | 'batched' | 'bs1';
const SIDES: Side[] = ['dike', 'batched', 'bs1'];
const SIDE_NAME: Record<Side, string> = { dike: 'Dikē', batched: 'torch-batched', bs1: 'torch-bs1' };

interface Plan {
  key: 'small' | 'base';
  name: string;
  dir: string;
  source: string;
  description: string;
  /** Pairs run by Dikē and torch-batched (the first N of the CSV). */
  pairs: number;
  /** Pairs per timed chunk (DIKE_CHUNK, or fewer to keep a slow model's run short). */
  chunk: number;
  /** Pairs run by torch-bs1: the first chunks (rounded up to whole chunks). */
  bs1Pairs: number;
}

function plans(quick: boolean): Plan[] {
  const q = <T>(full: T, short: T): T => (quick ? short : full);
  return [
    {
      key: 'small',
      name: 'small-bert-mlm',
      dir: SMALL,
      source: '`../shared/models/small-bert-mlm`',
      description: 'trained small BERT (hidden 256, 4 layers, vocab 30522; F16 on disk, run in float32)',
      pairs: q(1508, 16),
      chunk: q(DIKE_CHUNK, 8),
      bs1Pairs: q(64, 8),
    },
    {
      key: 'base',
      name: 'bert-base-random',
      dir: BASE,
      source: '`bench/out/bert-base-random/` (seeded random weights, generated by the bench)',
      description: 'BERT-base-sized BertForMaskedLM, seeded random weights (hidden 768, 12 layers, vocab 30522; F32)',
      pairs: q(40, 4),
      chunk: q(8, 2),
      bs1Pairs: q(8, 2),
    },
  ];
}

// ------------------------------------------------------------------------------------------------
// Workload: token ids and scored positions per pair, and the PyTorch cases
// ------------------------------------------------------------------------------------------------

interface PairWork {
  index: number;
  direction: 'stereo' | 'antistereo';
  /** sent1 / sent2 as metric.py orders them: sent1 = sent_more for stereo, sent_less for antistereo. */
  ids1: number[];
  ids2: number[];
  pos1: number[];
  pos2: number[];
}

interface TorchCase {
  mode: 'bs1' | 'batched';
  /** Indices into `pairs`; the answer has one entry per pair, in this order. */
  pairs: number[];
  /** batched: the forward batches, as [pair index, 0 = sent1 | 1 = sent2]. */
  groups?: [number, 0 | 1][][];
}

interface CrowsWorkload {
  name: string;
  dir: string;
  maskId: number;
  padId: number;
  pairs: PairWork[];
  cases: TorchCase[];
}

interface TorchAnswer {
  time: number;
  scores: [number, number][];
  outcomes: Outcome[];
}

type Outcome = 'hit' | 'miss' | 'neutral';

/**
 * The ids and positions crows-pairs.ts scores for `nangia-pll` (its `prepared` step: direction
 * decides sent1/sent2, lowercased for uncased tokenizers, difflib templates without the first and
 * last entries). The bench checks that Dikē masked exactly these positions.
 */
function pairWork(ckpt: Checkpoint, p: CrowsPair): PairWork {
  const tok = ckpt.tokenizer;
  const cfg = path.join(ckpt.dir, 'tokenizer_config.json');
  const lower = fs.existsSync(cfg) && readJsonObject(cfg)['do_lower_case'] === true;
  const [s1, s2] = p.direction === 'stereo' ? [p.sentMore, p.sentLess] : [p.sentLess, p.sentMore];
  const ids1 = tok.encode(lower ? s1.toLowerCase() : s1).ids;
  const ids2 = tok.encode(lower ? s2.toLowerCase() : s2).ids;
  const { t1, t2 } = sharedTemplates(ids1.map(String), ids2.map(String));
  return { index: p.index, direction: p.direction, ids1, ids2, pos1: t1.slice(1, -1), pos2: t2.slice(1, -1) };
}

/** The batches Dikē's ScoreCache forms for a chunk (maskedBuckets: same-length sentences, up to MASKED_MAX_TOKENS tokens). */
function batchedGroups(pairs: readonly PairWork[], idx: readonly number[]): [number, 0 | 1][][] {
  const sents = idx.flatMap((i) => [[i, 0] as [number, 0 | 1], [i, 1] as [number, 0 | 1]]);
  const ids = (s: [number, 0 | 1]): number[] => (s[1] === 0 ? pairs[s[0]]!.ids1 : pairs[s[0]]!.ids2);
  const pos = (s: [number, 0 | 1]): number[] => (s[1] === 0 ? pairs[s[0]]!.pos1 : pairs[s[0]]!.pos2);
  const groups = maskedBuckets(sents.map((s) => ({ ids: ids(s), positions: pos(s) })), MASKED_MAX_TOKENS);
  return groups.map((g) => g.map((k) => sents[k]!));
}

const range = (from: number, to: number): number[] => Array.from({ length: Math.max(0, to - from) }, (_, k) => from + k);

/** RFC 4180 quoting of every field. */
const csvLine = (fields: readonly string[]): string => fields.map((f) => `"${f.replace(/"/g, '""')}"`).join(',');

/** Write the CSV's header plus rows [from, to) as a data directory for crowsPairs.run. */
function writeChunkData(records: readonly string[][], from: number, to: number, name: string): string {
  const dir = path.join(CHUNK_DATA, name);
  fs.mkdirSync(path.join(dir, 'crows-pairs'), { recursive: true });
  const lines = [records[0]!, ...records.slice(1 + from, 1 + to)].map(csvLine);
  fs.writeFileSync(path.join(dir, 'crows-pairs', 'crows_pairs_anonymized.csv'), lines.join('\n') + '\n');
  return dir;
}

// ------------------------------------------------------------------------------------------------
// Dikē side
// ------------------------------------------------------------------------------------------------

interface DikeChunk {
  time: number;
  /** By pair index: [sent1 score, sent2 score] and the outcome. */
  scores: Map<number, [number, number]>;
  outcomes: Map<number, Outcome>;
  /** "ids@position" of every masked row Dikē ran, reconstructed from its batches. */
  masked: string[];
}

/**
 * Keeps references to the batches and targets the runner receives (O(1) work inside the timed
 * region); `decode` turns them into "ids@position" keys afterwards.
 */
class Recorder {
  private calls: { batch: PaddedBatch; targets: readonly number[] | null }[] = [];

  constructor(runner: ModelRunner) {
    const hidden = runner.hidden.bind(runner);
    const logprobs = runner.logprobs.bind(runner);
    runner.hidden = (batch, layers) => {
      this.calls.push({ batch, targets: null });
      return hidden(batch, layers);
    };
    runner.logprobs = (rows, targets) => {
      const last = this.calls[this.calls.length - 1];
      if (last === undefined || last.targets !== null) throw new Error('bench: logprobs without a preceding forward batch');
      last.targets = targets;
      return logprobs(rows, targets);
    };
  }

  decode(maskId: number): string[] {
    const keys: string[] = [];
    for (const { batch, targets } of this.calls) {
      if (targets === null) throw new Error('bench: a forward batch without its logprobs call');
      let t = 0;
      for (let r = 0; r < batch.batch; r++) {
        const ids = Array.from(batch.inputIds.subarray(r * batch.seq, r * batch.seq + batch.lengths[r]!), Number);
        const at = ids.flatMap((id, p) => (id === maskId ? [p] : []));
        if (at.length !== 1) throw new Error(`bench: a masked copy with ${at.length} mask tokens`);
        ids[at[0]!] = targets[t++]!;
        keys.push(`${ids.join(',')}@${at[0]}`);
      }
      if (t !== targets.length) throw new Error('bench: targets and masked rows differ in number');
    }
    this.calls = [];
    return keys;
  }
}

async function dikeChunk(ckpt: Checkpoint, runner: ModelRunner, recorder: Recorder, maskId: number, dataDir: string, work: readonly PairWork[]): Promise<DikeChunk> {
  const t0 = performance.now();
  const r = await crowsPairs.run({ ckpt, runner, dataDir }, { scorer: 'nangia-pll', seed: DEFAULT_SEED, resamples: 0 });
  const time = (performance.now() - t0) / 1000;
  const byIndex = new Map(work.map((w, i) => [w.index, i]));
  const scores = new Map<number, [number, number]>();
  const outcomes = new Map<number, Outcome>();
  for (const item of r.items) {
    const i = byIndex.get(Number(item.id));
    if (i === undefined) throw new Error(`bench: Dikē scored pair ${item.id}, which is not in the workload`);
    const d = item.detail!;
    const more = d['sent_more_score'] as number;
    const less = d['sent_less_score'] as number;
    scores.set(i, work[i]!.direction === 'stereo' ? [more, less] : [less, more]);
    outcomes.set(i, d['outcome'] as Outcome);
  }
  return { time, scores, outcomes, masked: recorder.decode(maskId) };
}

// ------------------------------------------------------------------------------------------------
// One model
// ------------------------------------------------------------------------------------------------

interface ModelResult {
  plan: Plan;
  pairs: number;
  bs1Pairs: number;
  /** Masked rows (forward-pass copies) per side over all its pairs. */
  rows: { torch: number; dike: number; bs1: number };
  /** Summed chunk times, seconds: over all pairs, and over the bs1 chunks only. */
  time: Record<Side, number>;
  timeOnBs1: { dike: number; batched: number };
  maxDiff: { batched: number; bs1: number };
  /** 100 · hits / pairs: over all pairs, and over the bs1 pairs. */
  metric: { dike: number; batched: number; dikeOnBs1: number; bs1: number };
  outcomeMismatch: { batched: number[]; bs1: number[] };
  positionsIdentical: boolean;
  positionsNote: string;
}

async function runModel(plan: Plan, records: readonly string[][], allPairs: readonly CrowsPair[], threads: number, python: string, env: NodeJS.ProcessEnv): Promise<{ result: ModelResult; info: TorchInfo }> {
  const ckpt = loadCheckpoint(plan.dir);
  const { mask, pad } = maskAndPadIds(ckpt);
  const N = Math.min(plan.pairs, allPairs.length);
  const work = allPairs.slice(0, N).map((p) => pairWork(ckpt, p));
  const C = plan.chunk;
  const chunks = range(0, Math.ceil(N / C)).map((c) => range(c * C, Math.min(N, (c + 1) * C)));
  const bs1Chunks = Math.min(chunks.length, Math.ceil(Math.min(plan.bs1Pairs, N) / C));
  const bs1Pairs = chunks.slice(0, bs1Chunks).reduce((a, c) => a + c.length, 0);

  // Torch cases: 0, 1 = warm-up (batched, bs1); then per chunk c: batched, and bs1 for the first chunks.
  const warm = range(0, Math.min(WARMUP_PAIRS, N));
  const cases: TorchCase[] = [
    { mode: 'batched', pairs: warm, groups: batchedGroups(work, warm) },
    { mode: 'bs1', pairs: warm },
  ];
  const caseOf = chunks.map((idx, c) => {
    const batched = cases.push({ mode: 'batched', pairs: idx, groups: batchedGroups(work, idx) }) - 1;
    const bs1 = c < bs1Chunks ? cases.push({ mode: 'bs1', pairs: idx }) - 1 : undefined;
    return { batched, bs1 };
  });
  const workload: CrowsWorkload = { name: plan.name, dir: plan.dir, maskId: mask, padId: pad, pairs: work, cases };
  const workloadFile = path.join(OUT, `crows-workload-${plan.key}.json`);
  fs.writeFileSync(workloadFile, JSON.stringify(workload));

  const warmDir = writeChunkData(records, 0, warm.length, `${plan.key}-warmup`);
  const chunkDirs = chunks.map((idx, c) => writeChunkData(records, idx[0]!, idx[idx.length - 1]! + 1, `${plan.key}-c${String(c).padStart(3, '0')}`));

  const runner = await ModelRunner.create(ckpt, { threads });
  const recorder = new Recorder(runner);
  const torch = await TorchServer.start(python, path.join(ROOT, 'bench', 'torch_crows.py'), workloadFile, threads, env);
  const ask = async (i: number): Promise<TorchAnswer> => (await torch.pass(i, true)) as unknown as TorchAnswer;

  // Warm-up, untimed.
  await dikeChunk(ckpt, runner, recorder, mask, warmDir, work.slice(0, warm.length));
  await ask(0);
  await ask(1);

  const time: Record<Side, number> = { dike: 0, batched: 0, bs1: 0 };
  const timeOnBs1 = { dike: 0, batched: 0 };
  const scores: Record<Side, ([number, number] | undefined)[]> = { dike: [], batched: [], bs1: [] };
  const outcomes: Record<Side, (Outcome | undefined)[]> = { dike: [], batched: [], bs1: [] };
  const wanted = new Set<string>();
  const maskedKeys: string[] = [];
  for (const [c, idx] of chunks.entries()) {
    for (const i of idx) {
      const w = work[i]!;
      for (const p of w.pos1) wanted.add(`${w.ids1.join(',')}@${p}`);
      for (const p of w.pos2) wanted.add(`${w.ids2.join(',')}@${p}`);
    }
    const active = SIDES.filter((s) => s !== 'bs1' || caseOf[c]!.bs1 !== undefined);
    const order = active.map((_, k) => active[(k + c) % active.length]!);
    const line: string[] = [];
    for (const side of order) {
      if (side === 'dike') {
        const d = await dikeChunk(ckpt, runner, recorder, mask, chunkDirs[c]!, work);
        time.dike += d.time;
        if (c < bs1Chunks) timeOnBs1.dike += d.time;
        for (const i of idx) {
          scores.dike[i] = d.scores.get(i);
          outcomes.dike[i] = d.outcomes.get(i);
        }
        maskedKeys.push(...d.masked);
        line.push(`Dikē ${d.time.toFixed(2)} s`);
      } else {
        const a = await ask(side === 'batched' ? caseOf[c]!.batched : caseOf[c]!.bs1!);
        time[side] += a.time;
        if (side === 'batched' && c < bs1Chunks) timeOnBs1.batched += a.time;
        idx.forEach((i, k) => {
          scores[side][i] = a.scores[k];
          outcomes[side][i] = a.outcomes[k];
        });
        line.push(`${SIDE_NAME[side]} ${a.time.toFixed(2)} s`);
      }
      await sleep(SETTLE_MS);
    }
    console.log(`  ${plan.name} chunk ${c + 1}/${chunks.length} (pairs ${idx[0]}–${idx[idx.length - 1]}): ${line.join(', ')}`);
  }
  const info = torch.info;
  await torch.stop();
  await runner.dispose();

  // Checks.
  const got = new Set(maskedKeys);
  const missing = [...wanted].filter((k) => !got.has(k)).length;
  const extra = [...got].filter((k) => !wanted.has(k)).length;
  const repeated = maskedKeys.length - got.size;
  const positionsIdentical = missing === 0 && extra === 0;
  const positionsNote =
    `${got.size} distinct (sentence, position) rows; missing ${missing}, extra ${extra}` + (repeated > 0 ? `; ${repeated} row(s) computed twice (a sentence repeated across chunks)` : '');
  const maxDiff = (side: 'batched' | 'bs1', upTo: number): number => {
    let m = 0;
    for (let i = 0; i < upTo; i++) {
      const a = scores.dike[i];
      const b = scores[side][i];
      if (a === undefined || b === undefined) return Number.POSITIVE_INFINITY;
      m = Math.max(m, Math.abs(a[0] - b[0]), Math.abs(a[1] - b[1]));
    }
    return m;
  };
  const metric = (side: Side, upTo: number): number => (100 * outcomes[side].slice(0, upTo).filter((o) => o === 'hit').length) / upTo;
  const mismatches = (side: 'batched' | 'bs1', upTo: number): number[] => range(0, upTo).filter((i) => outcomes.dike[i] !== outcomes[side][i]).map((i) => work[i]!.index);
  const rowsOf = (upTo: number): number => work.slice(0, upTo).reduce((a, w) => a + w.pos1.length + w.pos2.length, 0);
  return {
    info,
    result: {
      plan,
      pairs: N,
      bs1Pairs,
      rows: { torch: rowsOf(N), dike: maskedKeys.length, bs1: rowsOf(bs1Pairs) },
      time,
      timeOnBs1,
      maxDiff: { batched: maxDiff('batched', N), bs1: maxDiff('bs1', bs1Pairs) },
      metric: { dike: metric('dike', N), batched: metric('batched', N), dikeOnBs1: metric('dike', bs1Pairs), bs1: metric('bs1', bs1Pairs) },
      outcomeMismatch: { batched: mismatches('batched', N), bs1: mismatches('bs1', bs1Pairs) },
      positionsIdentical,
      positionsNote,
    },
  };
}

function checksPass(r: ModelResult): boolean {
  return (
    r.positionsIdentical &&
    r.maxDiff.batched <= SCORE_TOL &&
    r.maxDiff.bs1 <= SCORE_TOL &&
    r.outcomeMismatch.batched.length === 0 &&
    r.outcomeMismatch.bs1.length === 0 &&
    r.metric.dike === r.metric.batched &&
    r.metric.dikeOnBs1 === r.metric.bs1
  );
}

// ------------------------------------------------------------------------------------------------
// Report
// ------------------------------------------------------------------------------------------------

interface Env extends RunFacts {
  torch: TorchInfo;
  coreType: string;
  wallSeconds: number;
  quick: boolean;
}

const fmt = (x: number, digits = 2): string => x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

/** Issue 15's target: Dikē's pairs/s ÷ the best PyTorch configuration's. */
const CROWS_GOAL = 1.5;

function renderSection(env: Env, results: ModelResult[]): string {
  const out: string[] = [];
  const t = env.torch;
  const ob = t.openblas;
  out.push(BEGIN, '');
  out.push(`## CrowS-Pairs nangia-pll${env.quick ? ' (--quick smoke run; not a measurement)' : ''}`, '');
  out.push(
    `Written by \`npm run bench:crows${env.quick ? ' -- --quick' : ''}\` (bench/crows.ts, bench/torch_crows.py) on ${env.date}; run time ${fmt(env.wallSeconds / 60, 1)} min. Only the text between the \`crows:begin\`/\`crows:end\` markers is rewritten by that command.`,
    '',
  );
  out.push(
    `- Machine: ${env.cpu}, ${env.cores} cores visible, AVX-512 ${env.avx512 ? 'yes' : 'no'}; every side uses **${env.threads} thread(s)**. Effective parallelism of ${env.threads} busy threads (${env.threads}.00 = cores fully ours): ${env.parallelism[0].toFixed(2)} before, ${env.parallelism[1].toFixed(2)} after` +
      (Math.min(...env.parallelism) < 0.75 * env.threads ? ' — **the cores were shared with other load; absolute figures are low and noisy, the ratios less so**' : ''),
  );
  out.push(`- Dikē: node ${env.node}, onnxruntime-node ${env.ort}. PyTorch: ${t.torch} (python ${t.python}, numpy ${t.numpy}), float32, eval, \`inference_mode\`, OpenBLAS ${ob ? `kernels **${ob.core ?? '?'}**, ${ob.threads ?? '?'} thread(s)` : 'not loaded'}; OPENBLAS_CORETYPE=${env.coreType}; environment ${Object.entries(t.env).filter(([, v]) => v !== null).map(([k, v]) => `${k}=${v}`).join(', ')}`);
  out.push('');
  out.push('What runs (the same token ids and the same scored positions on every side; nyu-mll/crows-pairs metric.py\'s score: each token the two sentences share, [CLS]/[SEP] excepted, masked alone, log-probabilities summed per sentence):', '');
  out.push(`- **Dikē**: \`crowsPairs.run\` (src/measure/crows-pairs.ts, scorer \`nangia-pll\`) with a \`ModelRunner\`: difflib alignment, the masked copies of all pairs of a call (up to 64 pairs) batched in length buckets of ≤ ${MASKED_MAX_TOKENS} tokens (\`MASKED_MAX_TOKENS\`; one sentence's copies are never split), vocabulary projection only at the masked rows. Its time is the whole call: CSV parsing, tokenization, alignment, model (bootstrap resamples 0).`);
  out.push('- **torch-batched**: bench/torch_crows.py on bench/torch_bert.py\'s BertForMaskedLM: the masked copies of the same length buckets in one right-padded batch, head + log_softmax only at the masked rows. Model work only.');
  out.push('- **torch-bs1**: as metric.py / bias-bench: one forward per masked copy (batch size 1), MLM head at every position, log_softmax of the masked row, `.item()` summed. Model work only. Slow, so it runs only the first chunks; **Dikē / torch-bs1** compares Dikē\'s time on exactly those pairs.');
  out.push(`- Timing: the pairs are cut into chunks; each chunk is one \`crowsPairs.run\` call on a copy of the CSV holding just those pairs (a chunk of ${DIKE_CHUNK} pairs is exactly one batched call inside \`run\`; smaller chunks only for the slow model). Per chunk the sides run in turn, the order rotating, ${SETTLE_MS} ms pause after each; time = sum over chunks; one untimed warm-up on ${WARMUP_PAIRS} pairs per side. pairs/s = pairs ÷ time. Ratios > 1: Dikē is faster.`);
  out.push(`- Checks: Dikē's masked (sentence, position) rows, recorded from the batches it sent to onnxruntime, equal the workload's; max |Δ| of the sentence scores between Dikē and each PyTorch side ≤ ${SCORE_TOL}; the metric (100 · hits / pairs, with metric.py's \`round(score, 3)\`) equal, and every pair's outcome (hit / miss / neutral) equal.`);
  out.push('');
  out.push('| model | pairs | chunk | masked rows | Dikē pairs/s | torch-batched pairs/s | **Dikē / torch-batched** | torch-bs1 pairs (rows) | torch-bs1 pairs/s | Dikē pairs/s on those | **Dikē / torch-bs1** | Dikē s | torch-batched s | torch-bs1 s |');
  out.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of results) {
    const dps = r.pairs / r.time.dike;
    const bps = r.pairs / r.time.batched;
    const sps = r.bs1Pairs / r.time.bs1;
    const dOn = r.bs1Pairs / r.timeOnBs1.dike;
    out.push(
      `| ${r.plan.name} | ${r.pairs} | ${r.plan.chunk} | ${r.rows.torch} | ${fmt(dps)} | ${fmt(bps)} | **${(dps / bps).toFixed(2)}** | ${r.bs1Pairs} (${r.rows.bs1}) | ${fmt(sps)} | ${fmt(dOn)} | **${(dOn / sps).toFixed(2)}** | ${r.time.dike.toFixed(1)} | ${r.time.batched.toFixed(1)} | ${r.time.bs1.toFixed(1)} |`,
    );
  }
  out.push('');
  out.push('| model | positions identical | max \\|Δ\\| Dikē vs torch-batched | max \\|Δ\\| Dikē vs torch-bs1 | metric Dikē | metric torch-batched | metric Dikē / torch-bs1 (bs1 pairs) | outcomes differing | agree |');
  out.push('|---|---|---:|---:|---:|---:|---:|---|:---:|');
  for (const r of results) {
    const diff = [...r.outcomeMismatch.batched.map((i) => `batched #${i}`), ...r.outcomeMismatch.bs1.map((i) => `bs1 #${i}`)];
    out.push(
      `| ${r.plan.name} | ${r.positionsIdentical ? 'yes' : '**NO**'}: ${r.positionsNote} | ${r.maxDiff.batched.toExponential(1)} | ${r.maxDiff.bs1.toExponential(1)} | ${r.metric.dike.toFixed(2)} | ${r.metric.batched.toFixed(2)} | ${r.metric.dikeOnBs1.toFixed(2)} / ${r.metric.bs1.toFixed(2)} | ${diff.length === 0 ? 'none' : diff.join(', ')} | ${checksPass(r) ? 'yes' : '**NO**'} |`,
    );
  }
  out.push('');
  for (const r of results) out.push(`- ${r.plan.name}: ${r.plan.description}; ${r.plan.source}.`);
  const goal = results.map((r) => `${r.plan.name} ${((r.pairs / r.time.dike) / (r.pairs / r.time.batched)).toFixed(2)}×`).join(', ');
  out.push(`- Goal (issue 15): Dikē ≥ ${CROWS_GOAL}× the best PyTorch configuration (torch-batched: batched, length-bucketed, head at the masked rows only) in pairs/s on the same CPU, on each model. This run: ${goal} — ${results.every((r) => r.time.batched / r.time.dike >= CROWS_GOAL) ? '**met**' : '**not met**'}.`);
  out.push('', END);
  return out.join('\n');
}

// ------------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      threads: { type: 'string' },
      only: { type: 'string' },
      quick: { type: 'boolean', default: false },
      pairs: { type: 'string' },
      'bs1-pairs': { type: 'string' },
      chunk: { type: 'string' },
      python: { type: 'string', default: '/usr/bin/python3' },
      'openblas-coretype': { type: 'string' },
    },
  });
  const int = (v: string | undefined, name: string): number | undefined => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new Error(`--${name}: expected a positive integer, got ${v}`);
    return n;
  };
  const threads = int(values.threads, 'threads') ?? os.availableParallelism();
  const pairsOverride = int(values.pairs, 'pairs');
  const bs1Override = int(values['bs1-pairs'], 'bs1-pairs');
  const chunkOverride = int(values.chunk, 'chunk');
  const selected = plans(values.quick!)
    .filter((p) => values.only === undefined || p.key === values.only)
    .map((p) => ({ ...p, ...(pairsOverride !== undefined ? { pairs: pairsOverride } : {}), ...(bs1Override !== undefined ? { bs1Pairs: bs1Override } : {}),
      ...(chunkOverride !== undefined ? { chunk: chunkOverride } : {}),
    }));
  if (selected.length === 0) throw new Error(`--only: expected small or base, got ${values.only}`);

  const started = Date.now();
  const start = await startRun(threads, values['openblas-coretype'], OUT);
  const { core } = start;
  if (selected.some((p) => p.key === 'base')) ensureBaseModel(BASE, SMALL, ensureRandomBert);

  const text = fs.readFileSync(CSV, 'utf8');
  const allPairs = parseCrowsPairs(text, CSV);
  const records = parse(text, { relax_column_count: true, skip_empty_lines: false }) as string[][];
  if (records.length !== allPairs.length + 1) throw new Error(`${CSV}: ${records.length - 1} records but ${allPairs.length} pairs`);

  const results: ModelResult[] = [];
  let info: TorchInfo | undefined;
  for (const plan of selected) {
    const { result, info: i } = await runModel(plan, records, allPairs, threads, values.python!, torchEnv(threads, core.value));
    info = i;
    results.push(result);
    const r = result;
    console.log(
      `${plan.name}: ${r.pairs} pairs — Dikē ${fmt(r.pairs / r.time.dike)} pairs/s, torch-batched ${fmt(r.pairs / r.time.batched)} (Dikē/batched ${(r.time.batched / r.time.dike).toFixed(2)}), ` +
        `torch-bs1 ${fmt(r.bs1Pairs / r.time.bs1)} on ${r.bs1Pairs} pairs (Dikē/bs1 ${(r.time.bs1 / r.timeOnBs1.dike).toFixed(2)}); ` +
        `max|Δ| ${r.maxDiff.batched.toExponential(1)} / ${r.maxDiff.bs1.toExponential(1)}; metric ${r.metric.dike.toFixed(2)} / ${r.metric.batched.toFixed(2)}; ` +
        `positions ${r.positionsIdentical ? 'identical' : 'DIFFER'} (${r.positionsNote}); checks ${checksPass(r) ? 'pass' : 'FAIL'}`,
    );
  }
  const env: Env = {
    ...(await runFacts(start, threads)),
    torch: info!,
    coreType: `${core.value ?? '(unset)'}`,
    wallSeconds: (Date.now() - started) / 1000,
    quick: values.quick!,
  };
  const file = values.quick ? QUICK_RESULTS : RESULTS;
  writeMarkedSection(file, BEGIN, END, renderSection(env, results));
  console.log(`wrote the crows section of ${path.relative(ROOT, file)}`);
  const bad = results.filter((r) => !checksPass(r)).map((r) => r.plan.name);
  if (bad.length > 0) {
    console.error(`checks failed: ${bad.join(', ')}`);
    process.exitCode = 1;
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : String(e));
  process.exitCode = 1;
});
