/**
 * Hugging Face tokenizers, loaded from a model directory with `@huggingface/tokenizers`.
 *
 * Three layouts are understood, in this order of preference:
 * - `tokenizer.json` (a `tokenizers` serialization): used as is, then `tokenizer_config.json` is
 *   applied on top (added tokens, special tokens, `add_bos_token` / `add_eos_token`).
 * - `vocab.txt` (BertTokenizer, WordPiece).
 * - `vocab.json` + `merges.txt` (GPT2Tokenizer, byte-level BPE).
 *
 * For the last two we do not tokenize ourselves: we build, in memory, the `tokenizer.json` that
 * transformers' slow→fast converter (`BertConverter`, `GPT2Converter`) would produce, and hand it
 * to the library.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as hf from '@huggingface/tokenizers';
import { DikeError } from '../errors.js';

export interface SpecialTokenIds {
  bos?: number;
  eos?: number;
  unk?: number;
  pad?: number;
  cls?: number;
  sep?: number;
  mask?: number;
}

export interface Encoded {
  ids: number[];
  tokens: string[];
}

export interface EncodedPair extends Encoded {
  /** 0 for the first sequence (and its special tokens), 1 for the second, as HF `token_type_ids`. */
  typeIds: number[];
}

export interface DecodeOptions {
  /** Drop special tokens (HF `skip_special_tokens`). Default false, as HF. */
  skipSpecialTokens?: boolean;
  /**
   * HF `clean_up_tokenization_spaces` (" ." → ".", " n't" → "n't", ...). Default: the value in
   * tokenizer_config.json, or false when it has none (the transformers default today).
   */
  cleanUpSpaces?: boolean;
}

export interface Tokenizer {
  readonly kind: 'wordpiece' | 'bpe' | 'tokenizer.json';
  /** Size of the vocabulary including added tokens (HF `len(tokenizer)`). */
  readonly vocabSize: number;
  /** The largest token id (must be below the model's vocab_size). */
  readonly maxId: number;
  /** The file that defines the vocabulary (tokenizer.json, vocab.txt or vocab.json). */
  readonly file: string;
  /** Resolved from tokenizer_config.json / special_tokens_map.json / config.json (`bos_token_id` etc.). */
  readonly special: SpecialTokenIds;
  /** Ids of all special tokens. */
  readonly specialIds: ReadonlySet<number>;
  /** Default addSpecialTokens = true, the HF default (BERT adds [CLS]..[SEP]; GPT-2 adds nothing). */
  encode(text: string, opts?: { addSpecialTokens?: boolean }): Encoded;
  /** A sentence pair, as HF `tokenizer(a, b)`: BERT gives `[CLS] a [SEP] b [SEP]`. */
  encodePair(a: string, b: string, opts?: { addSpecialTokens?: boolean }): EncodedPair;
  decode(ids: number[], opts?: DecodeOptions): string;
  idToToken(id: number): string | undefined;
  tokenToId(token: string): number | undefined;
}

// ---- the library's surface -----------------------------------------------------------------------

/*
 * Library quirk: @huggingface/tokenizers 0.2.0 ships declarations whose relative imports have no
 * file extension ("./core/Tokenizer"), which TypeScript cannot resolve under NodeNext in an ES
 * module package, so every export is typed `any`. We describe the part we use ourselves.
 */
interface HfEncoding {
  ids: (number | undefined)[];
  tokens: string[];
  attention_mask: number[];
  token_type_ids?: number[];
}

interface HfAddedToken {
  content: string;
  id: number;
  special: boolean;
}

interface HfTokenizer {
  encode(
    text: string,
    options?: { text_pair?: string | null; add_special_tokens?: boolean; return_token_type_ids?: boolean | null },
  ): HfEncoding;
  decode(ids: number[], options?: { skip_special_tokens?: boolean; clean_up_tokenization_spaces?: boolean | null }): string;
  tokenize(text: string, options?: { add_special_tokens?: boolean }): string[];
  token_to_id(token: string): number | undefined;
  id_to_token(id: number): string | undefined;
  get_vocab(withAddedTokens?: boolean): Map<string | undefined, number>;
  get_added_tokens_decoder(): Map<number, HfAddedToken>;
}

const HfTokenizerClass = hf.Tokenizer as unknown as new (tokenizerJson: object, config: object) => HfTokenizer;

// ---- JSON shapes we build --------------------------------------------------------------------------

type Json = Record<string, unknown>;

interface AddedTokenJson {
  id: number;
  content: string;
  single_word: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}

type TemplateItem =
  | { SpecialToken: { id: string; type_id: number } }
  | { Sequence: { id: 'A' | 'B'; type_id: number } };

const SPECIAL_NAMES = ['bos', 'eos', 'unk', 'pad', 'cls', 'sep', 'mask'] as const;
type SpecialName = (typeof SPECIAL_NAMES)[number];

/**
 * The largest token id accepted (2²² ≈ 4.2 M, sixteen times the largest real vocabularies). The
 * library allocates an id → token array as long as the largest id, so a stray id of 10⁹ would hang
 * the load; a larger id is refused with the file and the token. The model's vocab_size bounds ids
 * further (checkpoint.ts).
 */
export const MAX_TOKEN_ID = 1 << 22;

function checkTokenId(file: string, place: string, id: number): void {
  if (id >= MAX_TOKEN_ID) throw new DikeError(file, place, `token id ${id} is beyond any vocabulary (at most ${MAX_TOKEN_ID - 1})`);
}

const NO_TOKENIZER = 'no tokenizer found: expected tokenizer.json, vocab.txt, or vocab.json + merges.txt';

// ---- files ---------------------------------------------------------------------------------------------

function readText(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new DikeError(file, '', 'file not found');
    throw new DikeError(file, '', `cannot read: ${(e as Error).message}`);
  }
}

/** A JSON object from `file`; undefined when the file does not exist and `optional` is set. */
function readJsonObject(file: string, optional: true): Json | undefined;
function readJsonObject(file: string, optional: false): Json;
function readJsonObject(file: string, optional: boolean): Json | undefined {
  if (optional && !fs.existsSync(file)) return undefined;
  let text = readText(file);
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new DikeError(file, '', `malformed JSON: ${(e as Error).message}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new DikeError(file, '', 'expected a JSON object at the top level');
  }
  return value as Json;
}

/** Lines as Python's text mode reads them (universal newlines), without the terminators. */
function splitLines(text: string): string[] {
  const lines = text.split(/\r\n|\r|\n/);
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  return lines;
}

// ---- tokenizer_config.json helpers -----------------------------------------------------------------

function isObject(v: unknown): v is Json {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Parameters of tokenizer_config.json with the file name for errors. */
class TokenizerConfig {
  constructor(
    readonly file: string,
    readonly json: Json,
  ) {}

  bool(key: string, fallback: boolean): boolean {
    const v = this.json[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'boolean') throw new DikeError(this.file, key, `expected true or false, got ${JSON.stringify(v)}`);
    return v;
  }

  /** true / false, or null when absent or null. */
  optBool(key: string): boolean | null {
    const v = this.json[key];
    if (v === undefined || v === null) return null;
    if (typeof v !== 'boolean') throw new DikeError(this.file, key, `expected true, false or null, got ${JSON.stringify(v)}`);
    return v;
  }

  has(key: string): boolean {
    return Object.hasOwn(this.json, key);
  }
}

/** A special token value as transformers stores it: a string, an AddedToken dict, or null. */
interface TokenSpec {
  content: string;
  flags?: Partial<AddedTokenJson>;
}

function tokenSpec(file: string, key: string, v: unknown): TokenSpec | null {
  if (v === undefined || v === null) return null;
  if (typeof v === 'string') return { content: v };
  if (isObject(v) && typeof v.content === 'string') {
    return { content: v.content, flags: addedTokenFlags(file, key, v) };
  }
  throw new DikeError(file, key, `expected a token string or an object with "content", got ${JSON.stringify(v)}`);
}

function addedTokenFlags(file: string, place: string, v: Json): Partial<AddedTokenJson> {
  const flags: Partial<AddedTokenJson> = {};
  for (const k of ['single_word', 'lstrip', 'rstrip', 'normalized', 'special'] as const) {
    const x = v[k];
    if (x === undefined || x === null) continue;
    if (typeof x !== 'boolean') throw new DikeError(file, `${place}.${k}`, `expected true or false, got ${JSON.stringify(x)}`);
    flags[k] = x;
  }
  return flags;
}

interface SpecialTokenSources {
  /** `bos` → "<s>" etc., after tokenizer_config.json, special_tokens_map.json and class defaults. */
  named: Map<SpecialName, TokenSpec>;
  /** additional_special_tokens. */
  additional: TokenSpec[];
}

/**
 * Named special tokens as transformers resolves them: the class default, replaced by
 * tokenizer_config.json (null there means "none"), replaced by special_tokens_map.json.
 */
function resolveSpecialTokens(
  tc: TokenizerConfig,
  stm: Json | undefined,
  stmFile: string,
  defaults: Partial<Record<SpecialName, string>>,
): SpecialTokenSources {
  const named = new Map<SpecialName, TokenSpec>();
  for (const name of SPECIAL_NAMES) {
    const key = `${name}_token`;
    let spec: TokenSpec | null = defaults[name] !== undefined ? { content: defaults[name] } : null;
    if (tc.has(key)) spec = tokenSpec(tc.file, key, tc.json[key]);
    if (stm !== undefined && stm[key] !== undefined && stm[key] !== null) spec = tokenSpec(stmFile, key, stm[key]);
    if (spec !== null) named.set(name, spec);
  }
  const additional: TokenSpec[] = [];
  const seen = new Set<string>();
  const addList = (file: string, v: unknown) => {
    if (v === undefined || v === null) return;
    if (!Array.isArray(v)) throw new DikeError(file, 'additional_special_tokens', 'expected a list');
    v.forEach((x, i) => {
      const spec = tokenSpec(file, `additional_special_tokens[${i}]`, x);
      if (spec !== null && !seen.has(spec.content)) {
        seen.add(spec.content);
        additional.push(spec);
      }
    });
  };
  addList(tc.file, tc.json.additional_special_tokens);
  if (stm !== undefined) addList(stmFile, stm.additional_special_tokens);
  return { named, additional };
}

/** tokenizer_config.json `added_tokens_decoder`: {"<id>": {content, lstrip, ...}}. */
function addedTokensDecoder(tc: TokenizerConfig): AddedTokenJson[] {
  const v = tc.json.added_tokens_decoder;
  if (v === undefined || v === null) return [];
  if (!isObject(v)) throw new DikeError(tc.file, 'added_tokens_decoder', 'expected an object of id → token');
  const out: AddedTokenJson[] = [];
  for (const [key, entry] of Object.entries(v)) {
    const place = `added_tokens_decoder.${key}`;
    if (!/^\d+$/.test(key)) throw new DikeError(tc.file, place, 'expected a non-negative integer id as key');
    checkTokenId(tc.file, place, Number(key));
    if (!isObject(entry) || typeof entry.content !== 'string') {
      throw new DikeError(tc.file, place, 'expected an object with a "content" string');
    }
    const flags = addedTokenFlags(tc.file, place, entry);
    const special = flags.special ?? false;
    out.push({
      id: Number(key),
      content: entry.content,
      single_word: flags.single_word ?? false,
      lstrip: flags.lstrip ?? false,
      rstrip: flags.rstrip ?? false,
      normalized: flags.normalized ?? !special,
      special,
    });
  }
  return out.sort((a, b) => a.id - b.id);
}

/**
 * Added tokens for a tokenizer: those already there (from tokenizer.json), then
 * `added_tokens_decoder` from tokenizer_config.json, then every named and additional special
 * token not yet present (special, not normalized, as transformers adds them). A token whose text is
 * in the vocabulary keeps that id; a new one gets the next free id.
 */
function mergeAddedTokens(
  existing: AddedTokenJson[],
  fromConfig: AddedTokenJson[],
  specials: SpecialTokenSources,
  vocab: ReadonlyMap<string, number>,
): AddedTokenJson[] {
  const out = [...existing];
  const byContent = new Set(out.map((t) => t.content));
  let nextId = 0;
  for (const id of vocab.values()) nextId = Math.max(nextId, id + 1);
  for (const t of out) nextId = Math.max(nextId, t.id + 1);
  for (const t of fromConfig) {
    if (byContent.has(t.content)) continue;
    out.push(t);
    byContent.add(t.content);
    nextId = Math.max(nextId, t.id + 1);
  }
  for (const spec of [...specials.named.values(), ...specials.additional]) {
    if (byContent.has(spec.content)) continue;
    const id = vocab.get(spec.content) ?? nextId++;
    out.push({
      id,
      content: spec.content,
      single_word: spec.flags?.single_word ?? false,
      lstrip: spec.flags?.lstrip ?? false,
      rstrip: spec.flags?.rstrip ?? false,
      normalized: spec.flags?.normalized ?? false,
      special: true,
    });
    byContent.add(spec.content);
  }
  return out;
}

/** HF TemplateProcessing JSON for `single` / `pair` built from (token | sequence) items. */
function templateProcessing(single: TemplateItem[], pair: TemplateItem[], tokenIds: ReadonlyMap<string, number>): Json {
  const special_tokens: Record<string, { id: string; ids: number[]; tokens: string[] }> = {};
  for (const item of [...single, ...pair]) {
    if ('SpecialToken' in item) {
      const content = item.SpecialToken.id;
      const id = tokenIds.get(content);
      special_tokens[content] = { id: content, ids: id === undefined ? [] : [id], tokens: [content] };
    }
  }
  return { type: 'TemplateProcessing', single, pair, special_tokens };
}

const tok = (id: string, type_id: number): TemplateItem => ({ SpecialToken: { id, type_id } });
const seq = (id: 'A' | 'B', type_id: number): TemplateItem => ({ Sequence: { id, type_id } });

/**
 * TemplateProcessing "[before:0] $A:0 [after:0]" for one text, and for a pair the same followed by
 * "[beforeB:1] $B:1 [afterB:1]" (absent tokens are left out).
 */
function wrapTemplate(
  before: string | undefined,
  after: string | undefined,
  beforeB: string | undefined,
  afterB: string | undefined,
  tokenIds: ReadonlyMap<string, number>,
): Json {
  const single: TemplateItem[] = [];
  if (before !== undefined) single.push(tok(before, 0));
  single.push(seq('A', 0));
  if (after !== undefined) single.push(tok(after, 0));
  const pair = [...single];
  if (beforeB !== undefined) pair.push(tok(beforeB, 1));
  pair.push(seq('B', 1));
  if (afterB !== undefined) pair.push(tok(afterB, 1));
  return templateProcessing(single, pair, tokenIds);
}

function idsOf(vocab: ReadonlyMap<string, number>, added: AddedTokenJson[]): Map<string, number> {
  const m = new Map(vocab);
  for (const t of added) m.set(t.content, t.id);
  return m;
}

// ---- the three layouts ---------------------------------------------------------------------------

interface Built {
  kind: Tokenizer['kind'];
  file: string;
  json: Json;
  specials: SpecialTokenSources;
}

/** vocab.txt → the tokenizer.json of transformers' BertConverter. */
function buildWordPiece(dir: string, tc: TokenizerConfig, stm: Json | undefined, stmFile: string): Built {
  const file = path.join(dir, 'vocab.txt');
  // As transformers' load_vocab: token = line without its newline, id = line number; a repeated
  // token keeps its last line.
  const vocab = new Map<string, number>();
  splitLines(readText(file)).forEach((line, i) => vocab.set(line, i));
  if (vocab.size === 0) throw new DikeError(file, '', 'empty vocabulary');

  const specials = resolveSpecialTokens(tc, stm, stmFile, {
    unk: '[UNK]',
    sep: '[SEP]',
    pad: '[PAD]',
    cls: '[CLS]',
    mask: '[MASK]',
  });
  const lowercase = tc.bool('do_lower_case', true);
  const stripAccents = tc.optBool('strip_accents');
  const added = mergeAddedTokens([], addedTokensDecoder(tc), specials, vocab);
  const ids = idsOf(vocab, added);

  // BertConverter: "[CLS]:0 $A:0 [SEP]:0" / "[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1".
  const cls = specials.named.get('cls')?.content;
  const sep = specials.named.get('sep')?.content;
  const post = wrapTemplate(cls, sep, undefined, sep, ids);

  const unk = specials.named.get('unk')?.content;
  const json: Json = {
    version: '1.0',
    added_tokens: added,
    normalizer: {
      type: 'BertNormalizer',
      clean_text: true,
      handle_chinese_chars: tc.bool('tokenize_chinese_chars', true),
      // null in transformers means "strip accents when lowercasing"; resolve it here.
      strip_accents: stripAccents ?? lowercase,
      lowercase,
    },
    pre_tokenizer: { type: 'BertPreTokenizer' },
    model: {
      type: 'WordPiece',
      unk_token: unk ?? '[UNK]',
      continuing_subword_prefix: '##',
      max_input_chars_per_word: 100,
      vocab: Object.fromEntries(vocab),
    },
    post_processor: post,
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
  };
  return { kind: 'wordpiece', file, json, specials };
}

/** vocab.json + merges.txt → the tokenizer.json of transformers' GPT2Converter. */
function buildByteLevelBpe(dir: string, tc: TokenizerConfig, stm: Json | undefined, stmFile: string): Built {
  const vocabFile = path.join(dir, 'vocab.json');
  const mergesFile = path.join(dir, 'merges.txt');
  const vocabJson = readJsonObject(vocabFile, false);
  const vocab = new Map<string, number>();
  for (const [k, v] of Object.entries(vocabJson)) {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) {
      throw new DikeError(vocabFile, k, `expected a non-negative integer id, got ${JSON.stringify(v)}`);
    }
    checkTokenId(vocabFile, JSON.stringify(k), v);
    vocab.set(k, v);
  }
  if (vocab.size === 0) throw new DikeError(vocabFile, '', 'empty vocabulary');

  // merges.txt: an optional "#version: ..." header, then one "left right" pair per line; rank = order.
  const merges: [string, string][] = [];
  splitLines(readText(mergesFile)).forEach((line, i) => {
    if (i === 0 && line.startsWith('#version')) return;
    if (line.trim() === '') return;
    const parts = line.trim().split(/ +/);
    if (parts.length !== 2) throw new DikeError(mergesFile, `line ${i + 1}`, `expected two symbols separated by a space, got ${JSON.stringify(line)}`);
    merges.push([parts[0]!, parts[1]!]);
  });

  const specials = resolveSpecialTokens(tc, stm, stmFile, {
    unk: '<|endoftext|>',
    bos: '<|endoftext|>',
    eos: '<|endoftext|>',
  });
  const added = mergeAddedTokens([], addedTokensDecoder(tc), specials, vocab);
  const ids = idsOf(vocab, added);

  // GPT2Converter: with add_bos_token, TemplateProcessing "bos:0 $A:0" / "bos:0 $A:0 $B:1";
  // otherwise ByteLevel(trim_offsets=False), which changes nothing but offsets. We give `null`
  // for the latter: see the note on ByteLevel post-processors in loadTokenizer.
  let post: Json | null = null;
  const bos = specials.named.get('bos')?.content;
  if (tc.bool('add_bos_token', false) && bos !== undefined) {
    post = wrapTemplate(bos, undefined, undefined, undefined, ids);
  }
  const addPrefixSpace = tc.bool('add_prefix_space', false);
  const json: Json = {
    version: '1.0',
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: addPrefixSpace, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: Object.fromEntries(vocab),
      merges,
    },
    post_processor: post,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
  };
  return { kind: 'bpe', file: vocabFile, json, specials };
}

/** tokenizer.json as is, with tokenizer_config.json applied on top. */
function buildFromTokenizerJson(dir: string, tc: TokenizerConfig, stm: Json | undefined, stmFile: string): Built {
  const file = path.join(dir, 'tokenizer.json');
  const json = readJsonObject(file, false);
  const model = json.model;
  if (!isObject(model)) throw new DikeError(file, 'model', 'missing or not an object');
  // The library requires these keys to be present (null is allowed).
  for (const k of ['normalizer', 'pre_tokenizer', 'post_processor', 'decoder']) {
    if (json[k] === undefined) json[k] = null;
  }

  const existing: AddedTokenJson[] = [];
  const rawAdded = json.added_tokens ?? [];
  if (!Array.isArray(rawAdded)) throw new DikeError(file, 'added_tokens', 'expected a list');
  rawAdded.forEach((t: unknown, i) => {
    const place = `added_tokens[${i}]`;
    if (!isObject(t) || typeof t.content !== 'string' || typeof t.id !== 'number' || !Number.isInteger(t.id)) {
      throw new DikeError(file, place, 'expected an object with integer "id" and string "content"');
    }
    if (t.id < 0) throw new DikeError(file, place, `expected a non-negative token id, found ${t.id}`);
    checkTokenId(file, place, t.id);
    const flags = addedTokenFlags(file, place, t);
    const special = flags.special ?? false;
    existing.push({
      id: t.id,
      content: t.content,
      single_word: flags.single_word ?? false,
      lstrip: flags.lstrip ?? false,
      rstrip: flags.rstrip ?? false,
      normalized: flags.normalized ?? !special,
      special,
    });
  });

  const vocab = modelVocab(file, model);
  const specials = resolveSpecialTokens(tc, stm, stmFile, {});
  const added = mergeAddedTokens(existing, addedTokensDecoder(tc), specials, vocab);
  json.added_tokens = added;

  // transformers (LlamaTokenizerFast, and PreTrainedTokenizerFast since v5): when
  // tokenizer_config.json sets add_bos_token / add_eos_token, the post-processor is replaced by
  // TemplateProcessing "[bos:0] $A:0 [eos:0]" / "... [bos:1] $B:1 [eos:1]". A flag whose token is
  // unset counts as false.
  if (tc.has('add_bos_token') || tc.has('add_eos_token')) {
    const bos = specials.named.get('bos')?.content;
    const eos = specials.named.get('eos')?.content;
    const addBos = tc.bool('add_bos_token', false) && bos !== undefined;
    const addEos = tc.bool('add_eos_token', false) && eos !== undefined;
    json.post_processor =
      addBos || addEos
        ? wrapTemplate(addBos ? bos : undefined, addEos ? eos : undefined, addBos ? bos : undefined, addEos ? eos : undefined, idsOf(vocab, added))
        : null;
  }
  return { kind: 'tokenizer.json', file, json, specials };
}

/** token → id of a tokenizer.json model (BPE / WordPiece: an object; Unigram: a list of [piece, score]). */
function modelVocab(file: string, model: Json): Map<string, number> {
  const v = model.vocab;
  const out = new Map<string, number>();
  if (Array.isArray(v)) {
    v.forEach((entry: unknown, i) => {
      if (Array.isArray(entry) && typeof entry[0] === 'string') out.set(entry[0], i);
    });
  } else if (isObject(v)) {
    for (const [k, id] of Object.entries(v)) {
      if (typeof id !== 'number') continue;
      if (!Number.isInteger(id) || id < 0) throw new DikeError(file, `model.vocab ${JSON.stringify(k)}`, `expected a non-negative integer id, found ${id}`);
      checkTokenId(file, `model.vocab ${JSON.stringify(k)}`, id);
      out.set(k, id);
    }
  } else {
    throw new DikeError(file, 'model.vocab', 'missing or not an object');
  }
  return out;
}

/*
 * Library workarounds for its BertNormalizer, applied to the text before the library sees it:
 * - `handle_chinese_chars` walks UTF-16 code units, so CJK ideographs outside the BMP (Extension B
 *   and later, U+20000..U+2CEAF, and the compatibility supplement U+2F800..U+2FA1F) are not
 *   surrounded by spaces. HF does, so "a\u{20000}b" is a, [UNK], b there but one [UNK] here.
 *   Adding the spaces first gives HF's result: spaces survive clean_text and the later steps.
 * - `clean_text` drops \p{Cc}, \p{Cf}, \p{Co}, \p{Cs} but keeps unassigned code points (\p{Cn});
 *   HF (Rust `is_other`, and Python's BertTokenizer `category.startswith("C")`) drops those too.
 * Both act on the whole text, before added tokens are matched, where HF acts after that split;
 * the difference shows only for an added token that itself contains such characters.
 */
const ASTRAL_CJK = /[\u{20000}-\u{2A6DF}\u{2A700}-\u{2B73F}\u{2B740}-\u{2B81F}\u{2B820}-\u{2CEAF}\u{2F800}-\u{2FA1F}]/gu;
const UNASSIGNED = /\p{Cn}/gu;

function bertTextFix(json: Json): ((text: string) => string) | undefined {
  const n = json.normalizer;
  if (!isObject(n) || n.type !== 'BertNormalizer') return undefined;
  const clean = n.clean_text === true;
  const cjk = n.handle_chinese_chars === true;
  if (!clean && !cjk) return undefined;
  return (text) => {
    if (clean) text = text.replace(UNASSIGNED, '');
    if (cjk) text = text.replace(ASTRAL_CJK, ' $& ');
    return text;
  };
}

/**
 * Library workaround: its ByteLevel post-processor returns `{tokens, tokens_pair}` and the
 * tokenizer then reads only `tokens`, so the second text of a pair is silently dropped. In HF the
 * ByteLevel post-processor only trims offsets, i.e. it just concatenates the two sequences, which
 * is exactly what the library does when there is no post-processor. So we drop a top-level one.
 */
function dropByteLevelPostProcessor(json: Json): void {
  const post = json.post_processor;
  if (isObject(post) && post.type === 'ByteLevel') json.post_processor = null;
}

// ---- loading -----------------------------------------------------------------------------------------

/** The files a Hugging Face tokenizer may consist of (whichever exist in a model directory). */
export const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'added_tokens.json', 'vocab.txt', 'vocab.json', 'merges.txt'] as const;

/** Copy the tokenizer files of model directory `from` into `to` (a written model must load alone). */
export function copyTokenizerFiles(from: string, to: string): void {
  for (const f of TOKENIZER_FILES) {
    const src = path.join(from, f);
    if (fs.existsSync(src)) fs.copyFileSync(src, path.join(to, f));
  }
}

export function loadTokenizer(dir: string): Tokenizer {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(dir);
  } catch {
    throw new DikeError(dir, '', 'model directory not found');
  }
  if (!stat.isDirectory()) throw new DikeError(dir, '', 'not a directory');

  const exists = (f: string) => fs.existsSync(path.join(dir, f));
  const tcFile = path.join(dir, 'tokenizer_config.json');
  const stmFile = path.join(dir, 'special_tokens_map.json');
  const cfgFile = path.join(dir, 'config.json');

  let layout: 'tokenizer.json' | 'wordpiece' | 'bpe';
  if (exists('tokenizer.json')) layout = 'tokenizer.json';
  else if (exists('vocab.txt')) layout = 'wordpiece';
  else if (exists('vocab.json') && exists('merges.txt')) layout = 'bpe';
  else if (exists('vocab.json')) throw new DikeError(dir, '', `${NO_TOKENIZER} (vocab.json is there, merges.txt is missing)`);
  else throw new DikeError(dir, '', NO_TOKENIZER);

  const tc = new TokenizerConfig(tcFile, readJsonObject(tcFile, true) ?? {});
  const stm = readJsonObject(stmFile, true);
  const modelConfig = readJsonObject(cfgFile, true);

  const built =
    layout === 'tokenizer.json'
      ? buildFromTokenizerJson(dir, tc, stm, stmFile)
      : layout === 'wordpiece'
        ? buildWordPiece(dir, tc, stm, stmFile)
        : buildByteLevelBpe(dir, tc, stm, stmFile);
  dropByteLevelPostProcessor(built.json);

  // The library reads a few keys of tokenizer_config.json; the rest we have applied ourselves.
  const libConfig: Json = { clean_up_tokenization_spaces: tc.bool('clean_up_tokenization_spaces', false) };
  let inner: HfTokenizer;
  try {
    inner = new HfTokenizerClass(built.json, libConfig);
  } catch (e) {
    throw new DikeError(built.file, '', `cannot build the tokenizer: ${(e as Error).message}`);
  }
  return new HfBackedTokenizer(dir, built, inner, tc, modelConfig, cfgFile);
}

class HfBackedTokenizer implements Tokenizer {
  readonly kind: Tokenizer['kind'];
  readonly vocabSize: number;
  readonly maxId: number;
  readonly file: string;
  readonly special: SpecialTokenIds;
  readonly specialIds: ReadonlySet<number>;
  private readonly cleanUpSpaces: boolean;
  private readonly prepare: (text: string) => string;

  constructor(
    private readonly dir: string,
    built: Built,
    private readonly inner: HfTokenizer,
    tc: TokenizerConfig,
    modelConfig: Json | undefined,
    cfgFile: string,
  ) {
    this.kind = built.kind;
    this.cleanUpSpaces = tc.bool('clean_up_tokenization_spaces', false);
    this.prepare = bertTextFix(built.json) ?? ((text) => text);

    // get_vocab walks the library's id → token array, which may have holes (key `undefined`).
    const vocab = inner.get_vocab(true);
    this.vocabSize = vocab.size - (vocab.has(undefined) ? 1 : 0);
    this.file = built.file;
    let maxId = -1;
    for (const id of vocab.values()) if (typeof id === 'number' && id > maxId) maxId = id;
    this.maxId = maxId;

    const special: SpecialTokenIds = {};
    for (const name of SPECIAL_NAMES) {
      const spec = built.specials.named.get(name);
      let id = spec !== undefined ? inner.token_to_id(spec.content) : undefined;
      if (id === undefined && modelConfig !== undefined) id = configTokenId(cfgFile, modelConfig, `${name}_token_id`);
      if (id !== undefined) special[name] = id;
    }
    this.special = special;

    const ids = new Set<number>();
    for (const t of inner.get_added_tokens_decoder().values()) if (t.special) ids.add(t.id);
    for (const id of Object.values(special)) ids.add(id);
    for (const spec of built.specials.additional) {
      const id = inner.token_to_id(spec.content);
      if (id !== undefined) ids.add(id);
    }
    this.specialIds = ids;
  }

  encode(text: string, opts?: { addSpecialTokens?: boolean }): Encoded {
    const enc = this.inner.encode(this.prepare(text), { add_special_tokens: opts?.addSpecialTokens ?? true });
    return { ids: this.checkIds(enc), tokens: enc.tokens };
  }

  encodePair(a: string, b: string, opts?: { addSpecialTokens?: boolean }): EncodedPair {
    const addSpecialTokens = opts?.addSpecialTokens ?? true;
    a = this.prepare(a);
    b = this.prepare(b);
    const enc = this.inner.encode(a, { text_pair: b, add_special_tokens: addSpecialTokens, return_token_type_ids: true });
    const ids = this.checkIds(enc);
    let typeIds = enc.token_type_ids;
    if (typeIds === undefined || typeIds.length !== ids.length) {
      // No post-processor: HF concatenates A (type 0) and B (type 1).
      const nA = this.inner.tokenize(a).length;
      typeIds = ids.map((_, i) => (i < nA ? 0 : 1));
    }
    return { ids, tokens: enc.tokens, typeIds };
  }

  decode(ids: number[], opts?: DecodeOptions): string {
    for (const [i, id] of ids.entries()) {
      if (!Number.isInteger(id) || this.inner.id_to_token(id) === undefined) {
        throw new DikeError(this.dir, `ids[${i}]`, `no token with id ${id} (vocabulary size ${this.vocabSize})`);
      }
    }
    // The library refuses an empty list.
    if (ids.length === 0) return '';
    let use = ids;
    if (opts?.skipSpecialTokens) {
      // The library skips by token string among the added special tokens only; HF skips every
      // special id (named special tokens included). Filter here, then decode.
      use = ids.filter((id) => !this.specialIds.has(id));
      if (use.length === 0) return '';
    }
    return this.inner.decode(use, {
      skip_special_tokens: false,
      clean_up_tokenization_spaces: opts?.cleanUpSpaces ?? this.cleanUpSpaces,
    });
  }

  idToToken(id: number): string | undefined {
    if (!Number.isInteger(id) || id < 0) return undefined;
    return this.inner.id_to_token(id);
  }

  tokenToId(token: string): number | undefined {
    return this.inner.token_to_id(token);
  }

  private checkIds(enc: HfEncoding): number[] {
    enc.ids.forEach((id, i) => {
      if (id === undefined) {
        throw new DikeError(this.dir, '', `cannot encode: token ${JSON.stringify(enc.tokens[i])} has no id and there is no unknown token`);
      }
    });
    return enc.ids as number[];
  }
}

function configTokenId(file: string, cfg: Json, key: string): number | undefined {
  let v = cfg[key];
  if (Array.isArray(v)) v = v[0]; // e.g. several eos ids: the first is the eos token
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) {
    throw new DikeError(file, key, `expected a non-negative integer token id, got ${JSON.stringify(cfg[key])}`);
  }
  return v;
}
