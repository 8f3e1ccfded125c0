/**
 * WinoBias (Zhao, Wang, Yatskar, Ordonez & Chang, NAACL 2018), adapted to language models: every
 * pro-stereotypical sentence (the pronoun's gender matches the occupation's majority gender) is
 * paired with its anti-stereotypical twin (same type, split and line number; the pronoun gender
 * swapped), and we ask which of the two the model scores higher.
 *
 * Data (uclanlp/corefBias, WinoBias/wino/data): `{pro,anti}_stereotyped_type{1,2}.txt.{dev,test}`,
 * 396 lines each, `<n> <sentence>` with the gold coreference cluster in [brackets]. The plain sentence
 * is the line without its number, with the brackets removed, whitespace runs collapsed to one space
 * and trimmed (`the [ physician]` → `the physician`); the data's own tokenisation (`the farmer 's`)
 * is kept, since both twins share it.
 *
 * Pairing is checked, not assumed:
 * - both files have the same number of lines and every line carries its own 1-based number;
 * - every sentence has ≥ 2 bracketed spans: the first is the antecedent occupation (one of the 40 in
 *   `{female,male}_occupations.txt`, after an optional article), the rest are he/she-family pronouns;
 * - in the pro file all those pronouns have the occupation's gender, in the anti file the other one
 *   (this catches swapped or shifted files line by line);
 * - a *minimal pair* has the same words (case-sensitive; words = runs of [A-Za-z0-9'] and single
 *   punctuation marks) except at ≥ 1 position where a he-family pronoun (he, him, his, himself) faces
 *   a she-family one (she, her, hers, herself). The released files hold 19 pairs that are not minimal
 *   (typos such as "because of [she] was", rewordings, and type2 test lines 382 and 384, whose twins are
 *   different sentences). They are kept as items with outcome null and `excluded` in their detail, and
 *   left out of every number: a likelihood comparison of two sentences that differ in more than the
 *   pronoun does not measure the pronoun. If more than 10% of a file pair's lines are not minimal
 *   pairs, the files are misaligned and the run stops with an error.
 *
 * Scorers (a pair's score is s(pro) − s(anti), in nats):
 * - `sum-ll` (causal LMs): s = Σₖ log P(tₖ | BOS, t₍<k₎) over the sentence's tokens (src/score, as the
 *   CrowS-Pairs `sum-ll` scorer and lm-evaluation-harness's empty-context loglikelihood).
 * - `pll` (masked LMs; default): pseudo-log-likelihood (Salazar et al. 2020): each non-special token
 *   masked alone, Σ log P(token). The masked-LM counterpart of `sum-ll`: both compare the probability
 *   of the whole pro sentence with that of the whole anti sentence, so the same question is asked of
 *   both kinds of model (and the pronoun→occupation direction is part of it).
 * - `pronoun` (masked LMs): the slot-filling reading (as in de Vassimon Manela et al., EACL 2021):
 *   every position where the twins' tokens differ (the pronouns) is replaced by [MASK] *at once*, so no
 *   gendered pronoun stays visible, and s = Σ log P(pronoun token at its masked slot). Both sentences
 *   share the masked input, so one forward pass scores the pair. Pairs whose pronouns tokenise to
 *   different lengths cannot be slot-compared and are excluded (none with the BERT vocabulary).
 *
 * Report: `score` = % of (minimal) pairs where s(pro) > s(anti) (50 = no preference; a tie counts in
 * n for neither side, outcome null), with groups `type1`, `type2` and per split (`type1/dev`, …).
 * Zhao et al. report the bias as the pro − anti gap of a coreference system's accuracy, per type;
 * our analogue, `extra.gap`, is the % of pairs preferring pro minus the % preferring anti, i.e. the
 * accuracy of "pick the sentence the model scores higher" on the pro set minus that on the anti set
 * (= 2·score − 100 without ties), overall and per type. Also the mean score difference and the
 * preference split by the referent's stereotype gender (a model that prefers "he" everywhere shows up
 * there). `limit` takes the first N pairs of each of the four (type, split) file pairs.
 */
import path from 'node:path';
import { DikeError } from '../errors.js';
import type { Checkpoint } from '../model/checkpoint.js';
import { ModelRunner, gatherRows, lengthBuckets, padBatch } from '../runtime/session.js';
import { ScoreCache } from '../score/cache.js';
import { DEFAULT_MAX_TOKENS } from '../score/causal.js';
import { nonSpecialPositions } from '../score/masked.js';
import { causalBos, maskAndPadIds } from '../score/text.js';
import { dataRecords, readText, requireDataFile } from './data.js';
import { sha256File } from '../util/hash.js';
import { bootstrapCI, groupIndices, meanCI, subSeed } from './stats/bootstrap.js';
import type { Benchmark, BenchmarkResult, Dataset, ItemObjective, ItemScore, MeasureContext, MeasureOptions, ScoreCI, ScoreTerm } from './types.js';

const RAW = 'https://raw.githubusercontent.com/uclanlp/corefBias/0bce984dd081bbc10b0622f326727a024c607895/WinoBias/wino/data/';

export const WINOBIAS_DATASET: Dataset = {
  name: 'winobias',
  folder: 'winobias',
  license: 'MIT',
  citation: 'Zhao, Wang, Yatskar, Ordonez & Chang (2018). Gender Bias in Coreference Resolution: Evaluation and Debiasing Methods. NAACL.',
  homepage: 'https://github.com/uclanlp/corefBias',
  files: [
    ['anti_stereotyped_type1.txt.dev', 'a4e0ebae344e78b56f657a42e8ae684b9db7747d177c5e7149c0907ebb7f3bf6', 32782],
    ['anti_stereotyped_type1.txt.test', '331db5bd74bfefebf146a60b67645152a4a1991570d2a56f57154103ac361dd2', 34778],
    ['anti_stereotyped_type2.txt.dev', '763ad829ad724f9a85ead689ba8ca69072020cb1238def6210f0fc6a47b97e59', 30875],
    ['anti_stereotyped_type2.txt.test', '336571ac1ea8c06cd2aba8e5dd2bd98e00acc0c48da3e4ec5ec7e54eb2633a8f', 31769],
    ['female_occupations.txt', '693bff12286c2c1d46c7d4d45a44a631574710c30b39c1a3001bb7bdebb44ed8', 177],
    ['male_occupations.txt', '6b82d88847b69d56d207a0c396e9830b031890de585e916e6b4e9bc50672657e', 169],
    ['pro_stereotyped_type1.txt.dev', 'dd55a0d220fe4c0ceb63dd4648223fb4fe1a58d5ad95c116a002ad24b0e292a5', 32786],
    ['pro_stereotyped_type1.txt.test', 'db7838907238a758eeb5779e48f38c013b892910d6fe864456c59f04245c6689', 34820],
    ['pro_stereotyped_type2.txt.dev', '8f0250de723cea9328e3eaf7169e07936f01aa5909ce7aa580db66eb803f4e86', 30884],
    ['pro_stereotyped_type2.txt.test', 'ea1c1fd94fa612e3cc44d7fa3cc4cb76021bb63fdf94f9826f430051e9052438', 31749],
  ].map(([p, sha256, bytes]) => ({ path: p as string, url: RAW + (p as string), sha256: sha256 as string, bytes: bytes as number })),
};

export type WinoType = 'type1' | 'type2';
export type WinoSplit = 'dev' | 'test';
export type Gender = 'male' | 'female';
export const WINO_TYPES: readonly WinoType[] = ['type1', 'type2'];
export const WINO_SPLITS: readonly WinoSplit[] = ['dev', 'test'];

/** Share of non-minimal line pairs above which a file pair is declared misaligned. */
export const MISALIGNED_FRACTION = 0.1;

export interface WinoSentence {
  /** 1-based line number (equal to the number the line starts with). */
  line: number;
  /** Plain sentence: brackets removed, whitespace collapsed, trimmed. */
  text: string;
  /** Contents of the bracketed spans, in order (trimmed): antecedent, then pronoun(s). */
  spans: string[];
}

export interface WinoPair {
  type: WinoType;
  split: WinoSplit;
  line: number;
  pro: string;
  anti: string;
  /** The antecedent occupation (lower case, article removed) and its majority gender. */
  referent: string;
  referentGender: Gender;
  /** Whether the twins differ only in he/she-family pronouns. */
  minimal: boolean;
}

const HE = new Set(['he', 'him', 'his', 'himself']);
const SHE = new Set(['she', 'her', 'hers', 'herself']);

function pronounGender(w: string): Gender | undefined {
  const l = w.toLowerCase();
  return HE.has(l) ? 'male' : SHE.has(l) ? 'female' : undefined;
}

/** Words for the minimal-pair check: runs of letters, digits and apostrophes, and single punctuation marks. */
export function winoWords(s: string): string[] {
  return s.match(/[A-Za-z0-9']+|[^\sA-Za-z0-9']/g) ?? [];
}

/** Whether two sentences differ only by swapped he/she-family pronouns (and differ at all). */
export function isMinimalPronounPair(a: string, b: string): boolean {
  const wa = winoWords(a);
  const wb = winoWords(b);
  if (wa.length !== wb.length) return false;
  let diffs = 0;
  for (let i = 0; i < wa.length; i++) {
    if (wa[i] === wb[i]) continue;
    const ga = pronounGender(wa[i]!);
    const gb = pronounGender(wb[i]!);
    if (ga === undefined || gb === undefined || ga === gb) return false;
    diffs++;
  }
  return diffs > 0;
}

/** Lines of a text file (LF or CRLF), without a trailing empty line after the final newline. */
function fileLines(text: string): string[] {
  const lines = text.split(/\r?\n/);
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  return lines;
}

/** Parse one WinoBias sentence file. Every problem names file and line. */
export function parseWinoBiasFile(text: string, file: string): WinoSentence[] {
  const lines = fileLines(text);
  if (lines.length === 0) throw new DikeError(file, '', 'empty file');
  return lines.map((raw, i) => {
    const line = i + 1;
    const at = `line ${line}`;
    const m = /^(\d+) (.*)$/.exec(raw);
    if (m === null) throw new DikeError(file, at, `expected "<line number> <sentence>", found ${JSON.stringify(raw)}`);
    if (Number(m[1]) !== line) throw new DikeError(file, at, `line starts with number ${m[1]}, expected ${line} (lines missing or out of order)`);
    const body = m[2]!;
    const spans: string[] = [];
    let open = -1;
    for (let k = 0; k < body.length; k++) {
      const c = body[k];
      if (c === '[') {
        if (open >= 0) throw new DikeError(file, at, `nested "[" at column ${k + 1}`);
        open = k;
      } else if (c === ']') {
        if (open < 0) throw new DikeError(file, at, `"]" without "[" at column ${k + 1}`);
        spans.push(body.slice(open + 1, k).trim());
        open = -1;
      }
    }
    if (open >= 0) throw new DikeError(file, at, `unclosed "[" at column ${open + 1}`);
    if (spans.length < 2) throw new DikeError(file, at, `expected at least 2 bracketed spans (antecedent and pronoun), found ${spans.length}`);
    const plain = body.replace(/[[\]]/g, '').replace(/\s+/g, ' ').trim();
    if (plain === '') throw new DikeError(file, at, 'empty sentence');
    return { line, text: plain, spans };
  });
}

/** Parse an occupation list (one per line, no final newline in the release). */
export function parseOccupations(text: string, file: string): string[] {
  const occ = fileLines(text).map((l) => l.trim().toLowerCase());
  occ.forEach((o, i) => {
    if (o === '') throw new DikeError(file, `line ${i + 1}`, 'empty occupation');
  });
  if (occ.length === 0) throw new DikeError(file, '', 'empty file');
  return occ;
}

export interface PairingInput {
  type: WinoType;
  split: WinoSplit;
  proFile: string;
  antiFile: string;
  /** Occupation (lower case) → majority gender. */
  occupations: ReadonlyMap<string, Gender>;
}

function checkGender(s: WinoSentence, file: string, occupations: ReadonlyMap<string, Gender>, stereo: 'pro' | 'anti'): { referent: string; gender: Gender } {
  const at = `line ${s.line}`;
  const referent = s.spans[0]!.toLowerCase().replace(/^(the|a|an)\s+/, '').trim();
  const gender = occupations.get(referent);
  if (gender === undefined) throw new DikeError(file, at, `antecedent [${s.spans[0]}] is not one of the ${occupations.size} WinoBias occupations`);
  const want: Gender = stereo === 'pro' ? gender : gender === 'male' ? 'female' : 'male';
  for (const p of s.spans.slice(1)) {
    const g = pronounGender(p);
    if (g === undefined) throw new DikeError(file, at, `bracketed span [${p}] after the antecedent is not a he/she-family pronoun`);
    if (g !== want) {
      throw new DikeError(
        file,
        at,
        `${stereo}-stereotyped sentence has pronoun [${p}] (${g}) for [${s.spans[0]}], a ${gender}-majority occupation: are the pro/anti files swapped or misaligned?`,
      );
    }
  }
  return { referent, gender };
}

/** Pair a pro file with its anti twin, checking alignment line by line (see the file comment). */
export function pairWinoBias(pro: readonly WinoSentence[], anti: readonly WinoSentence[], inp: PairingInput): WinoPair[] {
  if (pro.length !== anti.length) {
    throw new DikeError(inp.antiFile, '', `has ${anti.length} lines but its pro-stereotyped twin ${inp.proFile} has ${pro.length}: the files are misaligned`);
  }
  const pairs = pro.map((p, i) => {
    const a = anti[i]!;
    const { referent, gender } = checkGender(p, inp.proFile, inp.occupations, 'pro');
    checkGender(a, inp.antiFile, inp.occupations, 'anti');
    return { type: inp.type, split: inp.split, line: p.line, pro: p.text, anti: a.text, referent, referentGender: gender, minimal: isMinimalPronounPair(p.text, a.text) };
  });
  const bad = pairs.filter((q) => !q.minimal);
  if (bad.length > MISALIGNED_FRACTION * pairs.length) {
    const f = bad[0]!;
    throw new DikeError(
      inp.antiFile,
      `line ${f.line}`,
      `misaligned with ${inp.proFile}: ${bad.length} of ${pairs.length} line pairs differ in more than the pronoun (first: ${JSON.stringify(f.pro)} vs ${JSON.stringify(f.anti)})`,
    );
  }
  return pairs;
}

export interface WinoBiasData {
  pairs: WinoPair[];
  /** Absolute paths of every file read. */
  files: string[];
}

/** Read and pair all four (type, split) file pairs, in the order type1/dev, type1/test, type2/dev, type2/test. */
export function loadWinoBias(dataDir: string): WinoBiasData {
  const files: string[] = [];
  const declared = new Map<string, string>();
  const need = (rel: string): string => {
    const p = requireDataFile(dataDir, WINOBIAS_DATASET, rel);
    files.push(p);
    declared.set(p, WINOBIAS_DATASET.files.find((f) => f.path === rel)!.sha256);
    return p;
  };
  // A data error in a file that is not the declared release says so: a changed file explains most.
  const withChecksumHint = (e: DikeError, paths: string[]): DikeError => {
    const changed = paths.filter((p) => sha256File(p) !== declared.get(p)).map((p) => path.basename(p));
    if (changed.length === 0) return e;
    return new DikeError(e.file, e.place, `${e.problem} (${changed.join(', ')}: not the declared upstream release, SHA-256 differs)`);
  };
  const occupations = new Map<string, Gender>();
  for (const gender of ['female', 'male'] as const) {
    const f = need(`${gender}_occupations.txt`);
    for (const o of parseOccupations(readText(f), f)) {
      if (occupations.has(o)) throw withChecksumHint(new DikeError(f, '', `occupation "${o}" is listed twice`), [f]);
      occupations.set(o, gender);
    }
  }
  const pairs: WinoPair[] = [];
  for (const type of WINO_TYPES) {
    for (const split of WINO_SPLITS) {
      const proFile = need(`pro_stereotyped_${type}.txt.${split}`);
      const antiFile = need(`anti_stereotyped_${type}.txt.${split}`);
      try {
        const pro = parseWinoBiasFile(readText(proFile), proFile);
        const anti = parseWinoBiasFile(readText(antiFile), antiFile);
        pairs.push(...pairWinoBias(pro, anti, { type, split, proFile, antiFile, occupations }));
      } catch (e) {
        throw e instanceof DikeError ? withChecksumHint(e, [proFile, antiFile]) : e;
      }
    }
  }
  return { pairs, files };
}

// ---- scoring -------------------------------------------------------------------------------------

/** Per pair: the two sentence scores, or why the pair could not be scored. */
export interface PairScores {
  pro: number;
  anti: number;
  /** Set when the scorer cannot compare this pair (then pro/anti are NaN). */
  skipped?: string;
}

const CHUNK = 64;

function sum(xs: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < xs.length; i++) s += xs[i]!;
  return s;
}

/**
 * The `pronoun` scorer's forward pass: for each job one copy of the sentence with every pronoun
 * position masked at once; returns, per job, Σ log P(pro token) and Σ log P(anti token) over the slots.
 */
export async function maskedSlotScores(
  runner: ModelRunner,
  padId: number,
  jobs: readonly { masked: readonly number[]; positions: readonly number[]; proIds: readonly number[]; antiIds: readonly number[] }[],
  maxTokens = DEFAULT_MAX_TOKENS,
): Promise<{ pro: number; anti: number }[]> {
  const out: { pro: number; anti: number }[] = new Array(jobs.length);
  const H = runner.hiddenSize;
  for (const group of lengthBuckets(jobs.map((j) => j.masked.length), jobs.map(() => 1), maxTokens)) {
    const batch = padBatch(group.map((i) => jobs[i]!.masked), padId);
    const [last] = await runner.hidden(batch, [runner.numLayers]);
    const at: [number, number][] = [];
    const targets: number[] = [];
    group.forEach((i, r) => {
      const j = jobs[i]!;
      j.positions.forEach((p, k) => {
        at.push([r, p], [r, p]);
        targets.push(j.proIds[k]!, j.antiIds[k]!);
      });
    });
    const lp = await runner.logprobs(gatherRows(last!, batch.seq, H, at), targets);
    let off = 0;
    for (const i of group) {
      let pro = 0;
      let anti = 0;
      for (let k = 0; k < jobs[i]!.positions.length; k++) {
        pro += lp[off++]!;
        anti += lp[off++]!;
      }
      out[i] = { pro, anti };
    }
  }
  return out;
}

/** Score the pro and anti sentence of each pair with the named scorer. */
export async function scoreWinoPairs(
  ctx: { ckpt: Checkpoint; runner: ModelRunner },
  pairs: readonly Pick<WinoPair, 'pro' | 'anti'>[],
  scorer: string,
  progress?: (done: number, total: number) => void,
): Promise<PairScores[]> {
  const { ckpt, runner } = ctx;
  const tok = ckpt.tokenizer;
  const out: PairScores[] = [];
  if (scorer === 'sum-ll') {
    const cache = new ScoreCache(runner, { bos: causalBos(ckpt), pad: tok.special.pad ?? 0 });
    for (let start = 0; start < pairs.length; start += CHUNK) {
      const chunk = pairs.slice(start, start + CHUNK);
      const lps = await cache.causalLogprobs(chunk.flatMap((p) => [{ ids: tok.encode(p.pro, { addSpecialTokens: false }).ids }, { ids: tok.encode(p.anti, { addSpecialTokens: false }).ids }]));
      chunk.forEach((_, k) => out.push({ pro: sum(lps[2 * k]!), anti: sum(lps[2 * k + 1]!) }));
      progress?.(out.length, pairs.length);
    }
  } else if (scorer === 'pll') {
    const { mask, pad } = maskAndPadIds(ckpt);
    const cache = new ScoreCache(runner, { mask, pad });
    for (let start = 0; start < pairs.length; start += CHUNK) {
      const chunk = pairs.slice(start, start + CHUNK);
      const jobs = chunk.flatMap((p) => [p.pro, p.anti].map((s) => {
        const ids = tok.encode(s).ids;
        return { ids, positions: nonSpecialPositions(ids, tok.specialIds) };
      }));
      const lps = await cache.maskedLogprobs(jobs);
      chunk.forEach((_, k) => out.push({ pro: sum(lps[2 * k]!), anti: sum(lps[2 * k + 1]!) }));
      progress?.(out.length, pairs.length);
    }
  } else if (scorer === 'pronoun') {
    const { mask, pad } = maskAndPadIds(ckpt);
    for (let start = 0; start < pairs.length; start += CHUNK) {
      const chunk = pairs.slice(start, start + CHUNK);
      const prepared = chunk.map((p) => {
        const pro = tok.encode(p.pro).ids;
        const anti = tok.encode(p.anti).ids;
        if (pro.length !== anti.length) return { skipped: 'the pronouns tokenise to different lengths' };
        const positions = pro.map((_, i) => i).filter((i) => pro[i] !== anti[i]);
        if (positions.length === 0) return { skipped: 'the twins tokenise identically' };
        const masked = pro.slice();
        for (const i of positions) masked[i] = mask;
        return { masked, positions, proIds: positions.map((i) => pro[i]!), antiIds: positions.map((i) => anti[i]!) };
      });
      const jobs = prepared.filter((q): q is Exclude<typeof q, { skipped: string }> => !('skipped' in q));
      const scores = await maskedSlotScores(runner, pad, jobs);
      let j = 0;
      for (const q of prepared) out.push('skipped' in q ? { pro: NaN, anti: NaN, skipped: q.skipped } : scores[j++]!);
      progress?.(out.length, pairs.length);
    }
  } else {
    throw new DikeError('', '--scorer', `winobias has no scorer "${scorer}"`);
  }
  return out;
}

// ---- the benchmark -------------------------------------------------------------------------------

/** First `limit` pairs of each (type, split). */
function applyLimit(pairs: WinoPair[], limit: number | undefined): WinoPair[] {
  if (limit === undefined) return pairs;
  const seen = new Map<string, number>();
  return pairs.filter((p) => {
    const k = `${p.type}/${p.split}`;
    const n = seen.get(k) ?? 0;
    seen.set(k, n + 1);
    return n < limit;
  });
}

/** 100 · (#pro preferred − #anti preferred) / n over a resample of signs (+1, −1, 0). */
function gapCI(signs: readonly number[], opts: { seed: number; resamples: number }): ScoreCI {
  return bootstrapCI(
    signs.length,
    (idx) => {
      let s = 0;
      for (let i = 0; i < idx.length; i++) s += signs[idx[i]!]!;
      return (100 * s) / idx.length;
    },
    opts,
  );
}

export const winoBias: Benchmark = {
  name: 'winobias',
  description: 'WinoBias: % of pro/anti-stereotypical twin sentences (occupation–pronoun) where the model prefers the pro-stereotypical one (50 = no preference)',
  reference: 'Zhao et al. 2018 (uclanlp/corefBias WinoBias); pair-likelihood adaptation: sum-ll as lm-evaluation-harness, PLL as Salazar et al. 2020',
  dataset: WINOBIAS_DATASET,
  scorers: {
    'sum-ll': { tasks: ['causal-lm'], description: 'summed log-likelihood of each sentence after BOS' },
    pll: { tasks: ['masked-lm'], description: 'pseudo-log-likelihood of each sentence (every non-special token masked alone)' },
    pronoun: { tasks: ['masked-lm'], description: 'all pronoun slots masked at once; summed log-probability of the pro vs the anti pronouns' },
  },
  defaultScorer: (task) => (task === 'masked-lm' ? 'pll' : task === 'causal-lm' ? 'sum-ll' : undefined),

  /**
   * item score = s(pro) − s(anti), as `run` computes it, a signed sum of log-probabilities: sum-ll one
   * causal run of each sentence after BOS (±1), pll each non-special token masked alone (±1 per copy),
   * pronoun the shared input with every pronoun slot masked, its pro tokens (+1) and anti tokens (−1).
   * Excluded pairs (not minimal, or pronouns of different token lengths) score 0 in `run` and have no terms.
   */
  async objective(ctx, opts): Promise<ItemObjective[]> {
    const data = loadWinoBias(ctx.dataDir);
    const pairs = applyLimit(data.pairs, opts.limit);
    const tok = ctx.ckpt.tokenizer;
    const id = (p: WinoPair): string => `${p.type}/${p.split}/${p.line}`;
    const terms = (p: WinoPair): ScoreTerm[] => {
      if (!p.minimal) return [];
      if (opts.scorer === 'sum-ll') {
        const bos = causalBos(ctx.ckpt);
        return ([[p.pro, 1], [p.anti, -1]] as const).map(([s, weight]) => {
          const ids = tok.encode(s, { addSpecialTokens: false }).ids;
          return { ids: [bos, ...ids], rows: ids.map((_, k) => k), targets: ids, weight };
        });
      }
      const { mask } = maskAndPadIds(ctx.ckpt);
      if (opts.scorer === 'pll') {
        return ([[p.pro, 1], [p.anti, -1]] as const).flatMap(([s, weight]) => {
          const ids = tok.encode(s).ids;
          return nonSpecialPositions(ids, tok.specialIds).map((pos) => {
            const copy = ids.slice();
            copy[pos] = mask;
            return { ids: copy, rows: [pos], targets: [ids[pos]!], weight };
          });
        });
      }
      if (opts.scorer === 'pronoun') {
        const pro = tok.encode(p.pro).ids;
        const anti = tok.encode(p.anti).ids;
        if (pro.length !== anti.length) return [];
        const positions = pro.map((_, i) => i).filter((i) => pro[i] !== anti[i]);
        if (positions.length === 0) return [];
        const masked = pro.slice();
        for (const i of positions) masked[i] = mask;
        return [
          { ids: masked, rows: positions, targets: positions.map((i) => pro[i]!), weight: 1 },
          { ids: masked, rows: positions, targets: positions.map((i) => anti[i]!), weight: -1 },
        ];
      }
      throw new DikeError('', '--scorer', `winobias has no scorer "${opts.scorer}"`);
    };
    return pairs.map((p) => ({ id: id(p), group: p.type, terms: terms(p) }));
  },

  async run(ctx: MeasureContext, opts: MeasureOptions): Promise<BenchmarkResult> {
    const data = loadWinoBias(ctx.dataDir);
    const pairs = applyLimit(data.pairs, opts.limit);
    const minimal = pairs.filter((p) => p.minimal);
    const scores = await scoreWinoPairs(ctx, minimal, opts.scorer, opts.progress);
    const scoreOf = new Map(minimal.map((p, i) => [p, scores[i]!]));

    const items: ItemScore[] = [];
    const scored: { item: ItemScore; sign: number; pair: WinoPair }[] = [];
    for (const p of pairs) {
      const id = `${p.type}/${p.split}/${p.line}`;
      const base = { split: p.split, line: p.line, referent: p.referent, referent_gender: p.referentGender };
      const s = scoreOf.get(p);
      if (s === undefined || s.skipped !== undefined) {
        const reason = s?.skipped ?? 'not a minimal pair: the twins differ in more than the pronoun';
        items.push({ id, group: p.type, score: 0, outcome: null, detail: { ...base, excluded: reason } });
        continue;
      }
      const diff = s.pro - s.anti;
      const sign = diff > 0 ? 1 : diff < 0 ? -1 : 0;
      const item: ItemScore = {
        id,
        group: p.type,
        score: diff,
        outcome: sign === 0 ? null : sign > 0 ? 1 : 0,
        detail: { ...base, pro_score: s.pro, anti_score: s.anti, outcome: sign > 0 ? 'pro' : sign < 0 ? 'anti' : 'tie' },
      };
      items.push(item);
      scored.push({ item, sign, pair: p });
    }

    const boot = { seed: opts.seed, resamples: opts.resamples };
    const hits = scored.map((s) => (s.sign > 0 ? 1 : 0));
    const overall = meanCI(hits, { ...boot, scale: 100 });
    const groups: Record<string, ScoreCI> = {};
    const byType = groupIndices(scored, (s) => s.pair.type);
    const bySplit = groupIndices(scored, (s) => `${s.pair.type}/${s.pair.split}`);
    for (const [g, idx] of [...byType, ...bySplit]) {
      groups[g] = meanCI(idx.map((i) => hits[i]!), { seed: subSeed(opts.seed, g), resamples: opts.resamples, scale: 100 });
    }
    const signs = scored.map((s) => s.sign);
    const extra: Record<string, ScoreCI | number> = {
      gap: gapCI(signs, { ...boot, seed: subSeed(opts.seed, 'gap') }),
    };
    for (const [g, idx] of byType) extra[`gap/${g}`] = gapCI(idx.map((i) => signs[i]!), { ...boot, seed: subSeed(opts.seed, `gap/${g}`) });
    extra['mean_score_diff'] = meanCI(scored.map((s) => s.item.score), { ...boot, seed: subSeed(opts.seed, 'mean_score_diff') });
    for (const [g, idx] of groupIndices(scored, (s) => s.pair.referentGender)) {
      extra[`score/${g}_referent`] = meanCI(idx.map((i) => hits[i]!), { ...boot, seed: subSeed(opts.seed, `ref/${g}`), scale: 100 });
    }
    extra['ties'] = signs.filter((s) => s === 0).length;
    extra['excluded_pairs'] = pairs.length - scored.length;

    return {
      benchmark: 'winobias',
      scorer: opts.scorer,
      metric: '% of minimal pro/anti pairs where the pro-stereotypical sentence scores higher',
      ...overall,
      groups,
      extra,
      items,
      data: dataRecords(ctx.dataDir, data.files),
      seed: opts.seed,
      resamples: opts.resamples,
    };
  },
};
