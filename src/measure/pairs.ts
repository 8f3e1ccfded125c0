/**
 * Sentence pairs that differ only in the social group mentioned, as calibration data for debiasing
 * compression (Fair-GPTQ). The pairs come from the benchmark loaders here; the compress layer takes
 * them as plain data through its PairSource option (compress/types.ts), so that compress/ never
 * imports measure/ (the CLI and audit connect the two).
 *
 *   stereoset     intrasentence clusters in file order: (stereotype, anti-stereotype), the unrelated
 *                 sentence dropped (as upunaprosk/fair-gptq's README builds its examples)
 *   crows-pairs   (sent_more, sent_less) for stereo rows, (sent_less, sent_more) for antistereo rows,
 *                 so the first sentence is always the stereotypical one
 *   <file>.json   [{ "stereotype": "…", "anti_stereotype": "…" }, …] or [["…", "…"], …]
 *
 * Negative controls (Proskurina et al. 2025 run the method on pairs that should not debias; a method
 * that works for the right reason reduces bias with true pairs and not with these):
 *   shuffled:<source>   the first `limit` pairs of <source>, each stereotype sentence kept and paired
 *                       with the anti-stereotype sentence of ANOTHER pair (a seeded derangement, so
 *                       no pair keeps its own counterpart): the same sentences, the group contrast gone
 *   unrelated:stereoset each intrasentence cluster's stereotype sentence paired with the same
 *                       cluster's "unrelated" sentence (the BLANK filled with an unrelated word, e.g.
 *                       "The chess player was asian." / "… was fox."): the same template, no group
 *                       swap. Only StereoSet has such sentences; other sources are refused.
 * Generated pairs (measure/counterfactual.ts):
 *   counterfactual        sentences of the recipe's calibration text that mention a group (axes:
 *                         the request's, default all shipped lists), each with its group terms
 *                         swapped; counterfactual:<file> reads another text file
 * `:` inside the value works in `audit --variant fair-gptq:pairs=shuffled:stereoset` (the spec
 * splits the method at the first `:` only).
 */
import { readFileSync } from 'node:fs';
import { DikeError } from '../errors.js';
import { parseCrowsPairs, CROWS_DATASET } from './crows-pairs.js';
import { parseStereoSet, readStereoSet } from './stereoset.js';
import { readText, requireDataFile } from './data.js';
import { Rng } from '../util/rng.js';
import { COUNTERFACTUAL_AXES, counterfactualPairs, readSwapLists } from './counterfactual.js';

export interface SentencePairRecord {
  stereotype: string;
  antiStereotype: string;
  id?: string;
  group?: string;
}

function pairsFromFile(file: string): SentencePairRecord[] {
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new DikeError(file, '', code === 'ENOENT' ? 'sentence pairs: file not found (or use stereoset, crows-pairs)' : `sentence pairs: ${(e as Error).message.split('\n')[0]}`);
  }
  if (!Array.isArray(doc)) throw new DikeError(file, '', 'expected a list of pairs: [{ "stereotype": "…", "anti_stereotype": "…" }, …]');
  return doc.map((p, i) => {
    const s = Array.isArray(p) ? p[0] : (p as Record<string, unknown> | null)?.['stereotype'];
    const a = Array.isArray(p) ? p[1] : (p as Record<string, unknown> | null)?.['anti_stereotype'];
    if (typeof s !== 'string' || typeof a !== 'string' || s === '' || a === '') throw new DikeError(file, `pair ${i + 1}`, 'expected two non-empty sentences (stereotype, anti_stereotype)');
    return { stereotype: s, antiStereotype: a, id: String(i) };
  });
}

/** Negative-control prefixes of a pair source. */
export const PAIR_CONTROLS = ['shuffled', 'unrelated'] as const;

/**
 * A seeded derangement of 0…n−1 (no i maps to itself; n ≥ 2): a Fisher–Yates shuffle, then each
 * fixed point swapped with its successor (cyclically), which never creates a new one.
 */
export function derangement(n: number, seed: number): number[] {
  const p = new Rng(seed).shuffle(Array.from({ length: n }, (_, i) => i));
  if (n < 2) return p;
  for (let i = 0; i < n; i++) {
    if (p[i] !== i) continue;
    const j = (i + 1) % n;
    [p[i], p[j]] = [p[j]!, p[i]!];
  }
  return p;
}

/** The pairs of a named source (stereoset, crows-pairs) in `dataDir`, or of a JSON file; at most `limit`. */
export interface SentencePairRequest {
  source: string;
  limit?: number;
  seed?: number;
  axes?: string[];
  textFile?: string;
}

export function sentencePairs(dataDir: string | undefined, req: SentencePairRequest): SentencePairRecord[] {
  const colon = req.source.indexOf(':');
  const control = colon > 0 ? req.source.slice(0, colon) : '';
  if (control === 'shuffled') {
    const base = sentencePairs(dataDir, { ...req, source: req.source.slice(colon + 1) });
    if (base.length < 2) throw new DikeError('', 'pairs', `${req.source}: shuffling needs at least 2 pairs, found ${base.length}`);
    const p = derangement(base.length, req.seed ?? 0);
    return base.map((x, i) => ({ stereotype: x.stereotype, antiStereotype: base[p[i]!]!.antiStereotype, id: `${x.id ?? i}~${base[p[i]!]!.id ?? p[i]}`, ...(x.group !== undefined ? { group: x.group } : {}) }));
  }
  if (req.source === 'counterfactual' || control === 'counterfactual') {
    const file = control === 'counterfactual' ? req.source.slice(colon + 1) : req.textFile;
    if (file === undefined) throw new DikeError('', 'pairs', 'counterfactual pairs need a text: the recipe\'s calibration text, or pairs=counterfactual:<file>');
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      throw new DikeError(file, '', 'counterfactual pairs: cannot read this text file');
    }
    const lists = readSwapLists(req.axes ?? COUNTERFACTUAL_AXES);
    return counterfactualPairs(text, lists, req.seed ?? 0, req.limit).map((p) => ({ stereotype: p.original, antiStereotype: p.counterfactual, id: p.id, group: p.axis }));
  }
  if (control === 'unrelated') {
    if (req.source !== 'unrelated:stereoset') throw new DikeError('', 'pairs', `${req.source}: unrelated sentences exist only in StereoSet (use unrelated:stereoset)`);
    if (dataDir === undefined) throw new DikeError('', '--data', `pairs=${req.source} needs the data directory (--data or DIKE_DATA)`);
    const { file, text } = readStereoSet(dataDir);
    const pairs: SentencePairRecord[] = [];
    for (const c of parseStereoSet(text, file)) {
      const s = c.sentences.find((x) => x.goldLabel === 'stereotype');
      const u = c.sentences.find((x) => x.goldLabel === 'unrelated');
      if (s && u) pairs.push({ stereotype: s.sentence, antiStereotype: u.sentence, id: c.id, group: c.biasType });
    }
    return req.limit !== undefined ? pairs.slice(0, req.limit) : pairs;
  }
  let pairs: SentencePairRecord[];
  const need = (): string => {
    if (dataDir === undefined) throw new DikeError('', '--data', `pairs=${req.source} needs the data directory (--data or DIKE_DATA)`);
    return dataDir;
  };
  if (req.source === 'stereoset') {
    const { file, text } = readStereoSet(need());
    pairs = [];
    for (const c of parseStereoSet(text, file)) {
      const s = c.sentences.find((x) => x.goldLabel === 'stereotype');
      const a = c.sentences.find((x) => x.goldLabel === 'anti-stereotype');
      if (s && a) pairs.push({ stereotype: s.sentence, antiStereotype: a.sentence, id: c.id, group: c.biasType });
    }
  } else if (req.source === 'crows-pairs') {
    const file = requireDataFile(need(), CROWS_DATASET, 'crows_pairs_anonymized.csv');
    pairs = parseCrowsPairs(readText(file), file).map((p) => ({
      stereotype: p.direction === 'stereo' ? p.sentMore : p.sentLess,
      antiStereotype: p.direction === 'stereo' ? p.sentLess : p.sentMore,
      id: String(p.index),
      group: p.biasType,
    }));
  } else {
    pairs = pairsFromFile(req.source);
  }
  return req.limit !== undefined ? pairs.slice(0, req.limit) : pairs;
}
