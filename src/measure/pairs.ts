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
 */
import { readFileSync } from 'node:fs';
import { DikeError } from '../errors.js';
import { parseCrowsPairs, CROWS_DATASET } from './crows-pairs.js';
import { parseStereoSet, readStereoSet } from './stereoset.js';
import { readText, requireDataFile } from './data.js';

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

/** The pairs of a named source (stereoset, crows-pairs) in `dataDir`, or of a JSON file; at most `limit`. */
export function sentencePairs(dataDir: string | undefined, req: { source: string; limit?: number }): SentencePairRecord[] {
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
