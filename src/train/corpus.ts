/**
 * Training batches from plain-text files (one paragraph per line), as the reference models in
 * ../shared/models were trained (their TRAINING.md): a seeded shuffle of the paragraphs, tokenized and
 * packed contiguously into fixed-length sequences.
 *   masked-lm   each sequence = [CLS] + (S − 2) tokens + [SEP]; 15% of the non-special positions are
 *               chosen (Bernoulli), of those 80% → [MASK], 10% → a random token, 10% unchanged
 *               (Devlin et al. 2019, §3.1); loss rows = the chosen positions.
 *   causal-lm   paragraphs joined by the end-of-text token; S tokens per sequence; loss rows = every
 *               position but the last, predicting the next token (HF shift).
 *   sequence-classification  labelled texts (JSON lines or TSV), one per row, loss at [CLS].
 * Batch k depends only on (seed, k), so a resumed run sees exactly the batches it would have seen.
 */
import { readFileSync } from 'node:fs';
import { DikeError } from '../errors.js';
import { Rng } from '../util/rng.js';
import type { Tokenizer } from '../model/tokenizer.js';
import type { StepBatch } from './session.js';

export type Objective = 'masked-lm' | 'causal-lm' | 'sequence-classification';

export interface PackSpec {
  objective: Objective;
  seq: number;
  seed: number;
  /** Stop tokenizing once this many sequences are packed (the run needs no more). */
  maxSequences: number;
}

/** Read paragraphs (non-empty lines) from text files. */
export function readParagraphs(files: readonly string[]): string[] {
  const out: string[] = [];
  for (const f of files) {
    let text: string;
    try {
      text = readFileSync(f, 'utf8');
    } catch (e) {
      throw new DikeError(f, '', `cannot read training text: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
    }
    for (const line of text.split('\n')) if (line.trim() !== '') out.push(line);
  }
  if (out.length === 0) throw new DikeError(files.join(', '), '', 'no text to train on (every line is empty)');
  return out;
}

/** Pack a seeded shuffle of paragraphs into sequences of token ids. */
export function packSequences(paragraphs: readonly string[], tok: Tokenizer, spec: PackSpec): number[][] {
  const order = new Rng(spec.seed).shuffle(paragraphs.map((_, i) => i));
  const body = spec.objective === 'masked-lm' ? spec.seq - 2 : spec.seq;
  const eos = tok.special.eos ?? tok.special.bos;
  const cls = tok.special.cls;
  const sep = tok.special.sep;
  if (spec.objective === 'masked-lm' && (cls === undefined || sep === undefined || tok.special.mask === undefined)) {
    throw new DikeError('tokenizer', '', 'masked-LM training needs [CLS], [SEP] and [MASK] tokens');
  }
  if (spec.objective === 'causal-lm' && eos === undefined) throw new DikeError('tokenizer', '', 'causal-LM training needs an end-of-text token');
  const seqs: number[][] = [];
  let buf: number[] = [];
  for (const i of order) {
    const ids = tok.encode(paragraphs[i]!, { addSpecialTokens: false }).ids;
    if (spec.objective === 'causal-lm') buf.push(...ids, eos!);
    else buf.push(...ids);
    while (buf.length >= body && seqs.length < spec.maxSequences) {
      const chunk = buf.slice(0, body);
      buf = buf.slice(body);
      seqs.push(spec.objective === 'masked-lm' ? [cls!, ...chunk, sep!] : chunk);
    }
    if (seqs.length >= spec.maxSequences) break;
  }
  if (seqs.length === 0) throw new DikeError('training text', '', `too short for one sequence of ${spec.seq} tokens`);
  return seqs;
}

/** Row capacity for masked-LM batches: the mean plus 8 standard deviations of Binomial(n, p). */
export function maskedRowCapacity(batch: number, seq: number, p: number): number {
  const n = batch * (seq - 2);
  return Math.ceil(n * p + 8 * Math.sqrt(n * p * (1 - p))) + 1;
}

/** A generator seeded by (seed, step), independent across steps. */
export function stepRng(seed: number, step: number): Rng {
  return new Rng((Math.imul(seed ^ 0x5bd1e995, 0x9e3779b1) + Math.imul(step + 1, 0x85ebca6b)) >>> 0);
}

export interface BatchSpec {
  objective: Objective;
  batch: number;
  seq: number;
  rows: number;
  seed: number;
  mlmProbability: number;
  vocabSize: number;
  maskId?: number;
  specialIds: ReadonlySet<number>;
}

/** Batch `step` (0-based): sequences step·B … step·B + B − 1, cycling through the packed set. */
export function makeBatch(seqs: readonly number[][], spec: BatchSpec, step: number): StepBatch & { labelled: number } {
  const { batch: B, seq: S, rows: R } = spec;
  const inputIds = new BigInt64Array(B * S);
  const attentionMask = new BigInt64Array(B * S).fill(1n);
  const rows = new BigInt64Array(R);
  const targets = new BigInt64Array(R);
  const weights = new Float32Array(R);
  let n = 0;
  const rng = stepRng(spec.seed, step);
  for (let b = 0; b < B; b++) {
    const s = seqs[(step * B + b) % seqs.length]!;
    for (let k = 0; k < S; k++) {
      const id = s[k]!;
      let input = id;
      if (spec.objective === 'masked-lm') {
        if (!spec.specialIds.has(id) && rng.next() < spec.mlmProbability) {
          if (n >= R) throw new Error(`more than ${R} masked positions in batch ${step}`);
          rows[n] = BigInt(b * S + k);
          targets[n++] = BigInt(id);
          const r = rng.next();
          if (r < 0.8) input = spec.maskId!;
          else if (r < 0.9) input = rng.int(spec.vocabSize);
        }
      } else if (k + 1 < S) {
        rows[n] = BigInt(b * S + k);
        targets[n++] = BigInt(s[k + 1]!);
      }
      inputIds[b * S + k] = BigInt(input);
    }
  }
  for (let i = 0; i < n; i++) weights[i] = 1 / n;
  return { batch: B, seq: S, inputIds, attentionMask, rows, targets, weights, labelled: n };
}

// ---- sequence classification -------------------------------------------------------------------

export interface LabelledText {
  text: string;
  label: number;
}

/**
 * Labelled examples from a JSON-lines file ({"text": …, "label": name or index}) or a TSV file
 * (label<TAB>text). Labels are names from the model's id2label or indices; a bad row is an error
 * naming the file and line, never skipped.
 */
export function readLabelled(file: string, labels: readonly string[]): LabelledText[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new DikeError(file, '', `cannot read labelled data: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  const jsonl = file.endsWith('.jsonl') || file.endsWith('.json');
  const out: LabelledText[] = [];
  const toLabel = (v: unknown, line: number): number => {
    const i = typeof v === 'number' ? v : typeof v === 'string' ? (labels.includes(v) ? labels.indexOf(v) : /^\d+$/.test(v) ? Number(v) : -1) : -1;
    if (!Number.isInteger(i) || i < 0 || i >= labels.length) {
      throw new DikeError(file, `line ${line}`, `label ${JSON.stringify(v)} is not one of ${labels.map((l, k) => `${k}=${l}`).join(', ')}`);
    }
    return i;
  };
  text.split('\n').forEach((raw, k) => {
    const line = k + 1;
    if (raw.trim() === '') return;
    if (jsonl) {
      let row: unknown;
      try {
        row = JSON.parse(raw);
      } catch {
        throw new DikeError(file, `line ${line}`, 'not valid JSON');
      }
      const r = row as { text?: unknown; label?: unknown };
      if (typeof r.text !== 'string') throw new DikeError(file, `line ${line}`, 'expected a "text" string');
      out.push({ text: r.text, label: toLabel(r.label, line) });
    } else {
      const tab = raw.indexOf('\t');
      if (tab < 0) throw new DikeError(file, `line ${line}`, 'expected label<TAB>text');
      out.push({ text: raw.slice(tab + 1), label: toLabel(raw.slice(0, tab), line) });
    }
  });
  if (out.length === 0) throw new DikeError(file, '', 'no labelled examples');
  return out;
}

/** Encode, truncate to `seq` keeping the final [SEP], as HF truncation=True does for single texts. */
export function encodeForClassification(tok: Tokenizer, text: string, seq: number): number[] {
  const ids = tok.encode(text).ids;
  return ids.length <= seq ? ids : [...ids.slice(0, seq - 1), ids[ids.length - 1]!];
}

/**
 * Batch `step` of a classification run: examples in a seeded order reshuffled every epoch, right-padded;
 * the loss row of each example is its first position ([CLS], which BERT's pooler reads).
 */
export function makeClassificationBatch(examples: readonly { ids: number[]; label: number }[], spec: { batch: number; seq: number; seed: number; padId: number }, step: number): StepBatch {
  const { batch: B, seq: S } = spec;
  const perEpoch = Math.floor(examples.length / B) || 1;
  const epoch = Math.floor(step / perEpoch);
  const order = new Rng((spec.seed * 7919 + epoch) >>> 0).shuffle(examples.map((_, i) => i));
  const inputIds = new BigInt64Array(B * S).fill(BigInt(spec.padId));
  const attentionMask = new BigInt64Array(B * S);
  const rows = new BigInt64Array(B);
  const targets = new BigInt64Array(B);
  const weights = new Float32Array(B).fill(1 / B);
  for (let b = 0; b < B; b++) {
    const ex = examples[order[((step % perEpoch) * B + b) % order.length]!]!;
    ex.ids.forEach((id, k) => {
      inputIds[b * S + k] = BigInt(id);
      attentionMask[b * S + k] = 1n;
    });
    rows[b] = BigInt(b * S);
    targets[b] = BigInt(ex.label);
  }
  return { batch: B, seq: S, inputIds, attentionMask, rows, targets, weights };
}
