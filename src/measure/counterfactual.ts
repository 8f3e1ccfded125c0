/**
 * Counterfactual sentence pairs from any text: each sentence that mentions a social group is paired
 * with a copy in which the group terms are swapped for another group's — counterfactual data
 * augmentation (CDA; Zhao et al. 2018 "Gender Bias in Coreference Resolution", Webster et al. 2020
 * "Measuring and Reducing Gendered Correlations in Pre-trained Models"), here as calibration pairs
 * for Fair-GPTQ so that debiasing needs no benchmark.
 *
 * Word lists are data, one file per axis in data/counterfactual/<axis>.tsv (README.md there: format,
 * provenance, licence):
 *   `# …`                  comment
 *   `classes<TAB>c1<TAB>c2…` the axis's classes (two for binary axes, more for race, religion, …)
 *   `t1<TAB>t2…`           one row per term, its form in each class (inflections and plurals are rows
 *                          of their own); a term may have several words ("african american");
 *                          `-` = no counterpart in that class; `>t` = used as a replacement only,
 *                          never matched (words with common unrelated senses, e.g. "old", "straight")
 * Matching, per sentence: words are maximal runs of letters joined by `-` or an apostrophe
 * ("african-american" and "man's" are one word); terms match case-insensitively on whole words,
 * longest first, the words of a multi-word term separated by whitespace only. A word ending in 's
 * matches a term's last word plus the possessive, and the replacement gets the same 's. A term
 * listed in several rows of one class is ambiguous (gender.tsv: "her" is both "his" and "him"): its
 * first row is taken when the next word follows directly and is not a function word (the term is
 * used as a determiner: "her hair" → "his hair"), its second row otherwise ("to her." → "to him.").
 * Swapping: the first requested axis with a match in the sentence is swapped (one axis per pair, so
 * a pair differs in one group only). The sentence's first matched class c is exchanged with a target
 * class t — the other class of a binary axis; for a multi-class axis one drawn uniformly from the
 * others with a seeded generator, one draw per sentence in text order — in both directions (c → t,
 * t → c); terms of third classes and cells marked `-` stay as they are. The replacement keeps the
 * source's case: ALL CAPS, or a capital first letter; otherwise the list's own spelling.
 * Sentences: each line split after . ! ? followed by space and a capital; kept with 4–40 words.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DikeError } from '../errors.js';
import { Rng } from '../util/rng.js';

/** The shipped word lists (package root /data/counterfactual). */
export function counterfactualDir(): string {
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'data', 'counterfactual');
}

export const COUNTERFACTUAL_AXES = ['gender', 'race', 'religion', 'age', 'nationality', 'disability', 'sexual-orientation'] as const;

interface Cell {
  words: string[];
  text: string;
  matchable: boolean;
}

export interface SwapList {
  axis: string;
  classes: string[];
  /** rows[r][c]: the term of row r in class c, or null. */
  rows: (Cell | null)[][];
}

export function parseSwapList(text: string, file: string, axis: string): SwapList {
  let classes: string[] | undefined;
  const rows: (Cell | null)[][] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '');
    if (line.trim() === '' || line.startsWith('#')) return;
    const cols = line.split('\t').map((c) => c.trim());
    if (classes === undefined) {
      if (cols[0] !== 'classes' || cols.length < 3) throw new DikeError(file, `line ${i + 1}`, 'expected "classes<TAB>class1<TAB>class2…" before the terms');
      classes = cols.slice(1);
      return;
    }
    if (cols.length !== classes.length) throw new DikeError(file, `line ${i + 1}`, `expected ${classes.length} tab-separated terms (one per class: ${classes.join(', ')}), found ${cols.length}`);
    rows.push(
      cols.map((c) => {
        if (c === '-') return null;
        const matchable = !c.startsWith('>');
        const t = matchable ? c : c.slice(1);
        if (t === '' || !/^[\p{L}'’-]+( [\p{L}'’-]+)*$/u.test(t)) throw new DikeError(file, `line ${i + 1}`, `"${c}" is not a term (words of letters, - or ', single spaces)`);
        return { text: t, words: t.toLowerCase().split(' '), matchable };
      }),
    );
  });
  if (classes === undefined) throw new DikeError(file, '', 'no "classes" line');
  if (rows.length === 0) throw new DikeError(file, '', 'no terms');
  return { axis, classes, rows };
}

export function readSwapLists(axes: readonly string[], dir = counterfactualDir()): SwapList[] {
  return axes.map((a) => {
    if (!/^[a-z-]+$/.test(a)) throw new DikeError('', 'axes', `"${a}" is not an axis (shipped: ${COUNTERFACTUAL_AXES.join(', ')})`);
    const file = path.join(dir, `${a}.tsv`);
    if (!existsSync(file)) throw new DikeError('', 'axes', `no word list for axis "${a}" (shipped: ${COUNTERFACTUAL_AXES.join(', ')})`);
    return parseSwapList(readFileSync(file, 'utf8'), file, a);
  });
}

interface Word {
  text: string;
  start: number;
  end: number;
}

function words(s: string): Word[] {
  const out: Word[] = [];
  for (const m of s.matchAll(/\p{L}+(?:['’-]\p{L}+)*/gu)) out.push({ text: m[0], start: m.index!, end: m.index! + m[0].length });
  return out;
}

interface Match {
  from: number;
  /** word index after the match */
  to: number;
  start: number;
  end: number;
  row: number;
  cls: number;
  possessive: string;
}

/** Words after which an ambiguous term is not a determiner ("gave her the", "told her that"). */
const FUNCTION_WORDS = new Set(
  'a an the to and or but nor that this these those with in on at for of from by as up out down off over into onto about again away back so too very when while if then than because was were is are be been had has have do did not no all own'.split(' '),
);

/** Matches of one list in a sentence, left to right, longest first, non-overlapping. */
function findMatches(ws: Word[], s: string, list: SwapList): Match[] {
  // term (lowercase words joined by a space) → its (row, class), and a second row if it has one.
  const terms = new Map<string, { row: number; cls: number; n: number; second?: number }>();
  let longest = 1;
  list.rows.forEach((r, ri) =>
    r.forEach((c, ci) => {
      if (c === null || !c.matchable) return;
      const key = c.words.join(' ');
      const had = terms.get(key);
      if (had === undefined) terms.set(key, { row: ri, cls: ci, n: c.words.length });
      else if (had.cls === ci && had.second === undefined) had.second = ri;
      longest = Math.max(longest, c.words.length);
    }),
  );
  const out: Match[] = [];
  for (let i = 0; i < ws.length; ) {
    let found: Match | undefined;
    for (let n = Math.min(longest, ws.length - i); n >= 1 && found === undefined; n--) {
      const span = ws.slice(i, i + n);
      if (span.some((w, k) => k > 0 && !/^\s+$/.test(s.slice(span[k - 1]!.end, w.start)))) continue;
      const lower = span.map((w) => w.text.toLowerCase());
      const key = lower.join(' ');
      const direct = terms.get(key);
      if (direct) {
        let row = direct.row;
        if (direct.second !== undefined) {
          const next = ws[i + n];
          const determiner = next !== undefined && /^\s+$/.test(s.slice(span[n - 1]!.end, next.start)) && !FUNCTION_WORDS.has(next.text.toLowerCase());
          if (!determiner) row = direct.second;
        }
        found = { from: i, to: i + n, start: span[0]!.start, end: span[n - 1]!.end, row, cls: direct.cls, possessive: '' };
        break;
      }
      const poss = /['’]s$/.exec(lower[n - 1]!);
      if (poss) {
        const stem = terms.get([...lower.slice(0, n - 1), lower[n - 1]!.slice(0, -2)].join(' '));
        if (stem) found = { from: i, to: i + n, start: span[0]!.start, end: span[n - 1]!.end, row: stem.row, cls: stem.cls, possessive: span[n - 1]!.text.slice(-2) };
      }
    }
    if (found) {
      out.push(found);
      i = found.to;
    } else i++;
  }
  return out;
}

function matchCase(source: string, target: string): string {
  const letters = source.replace(/[^\p{L}]/gu, '');
  if (letters.length > 1 && letters === letters.toUpperCase() && letters !== letters.toLowerCase()) return target.toUpperCase();
  const first = source[0]!;
  if (first !== first.toLowerCase() && target[0] === target[0]!.toLowerCase()) return target[0]!.toUpperCase() + target.slice(1);
  return target;
}

/**
 * The counterfactual of one sentence on one axis, or undefined when no term of the axis is in it
 * (or none has a counterpart). `rng` draws the target class of multi-class axes.
 */
export function swapSentence(sentence: string, list: SwapList, rng: Rng): string | undefined {
  const ws = words(sentence);
  const ms = findMatches(ws, sentence, list);
  if (ms.length === 0) return undefined;
  const c = ms[0]!.cls;
  const k = list.classes.length;
  let t = k === 2 ? 1 - c : rng.int(k - 1);
  if (k > 2 && t >= c) t++;
  let out = '';
  let at = 0;
  let changed = false;
  for (const m of ms) {
    const to = m.cls === c ? t : m.cls === t ? c : -1;
    const cell = to < 0 ? null : list.rows[m.row]![to]!;
    if (cell === null) continue;
    out += sentence.slice(at, m.start) + matchCase(sentence.slice(m.start, m.end), cell.text) + m.possessive;
    at = m.end;
    changed = true;
  }
  return changed ? out + sentence.slice(at) : undefined;
}

export function splitSentences(line: string): string[] {
  return line
    .split(/(?<=[.!?]["”’)]?)\s+(?=["“(]?[A-Z])/)
    .map((s) => s.trim())
    .filter((s) => {
      const n = words(s).length;
      return n >= 4 && n <= 40;
    });
}

export interface CounterfactualPair {
  original: string;
  counterfactual: string;
  axis: string;
  /** line:sentence in the source text (1-based line). */
  id: string;
}

/** Pairs from a text, in text order, at most `limit`. */
export function counterfactualPairs(text: string, lists: readonly SwapList[], seed: number, limit = Infinity): CounterfactualPair[] {
  const rng = new Rng(seed);
  const out: CounterfactualPair[] = [];
  const lines = text.split('\n');
  for (let li = 0; li < lines.length && out.length < limit; li++) {
    const sentences = splitSentences(lines[li]!);
    for (let si = 0; si < sentences.length && out.length < limit; si++) {
      const s = sentences[si]!;
      for (const list of lists) {
        const cf = swapSentence(s, list, rng);
        if (cf === undefined) continue;
        out.push({ original: s, counterfactual: cf, axis: list.axis, id: `${li + 1}:${si + 1}` });
        break;
      }
    }
  }
  return out;
}
