import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DikeError } from '../src/errors.js';
import { loadTokenizer, type Tokenizer } from '../src/model/tokenizer.js';

function findRepoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new Error('package.json not found above the test file');
    dir = up;
  }
}

const shared = path.resolve(findRepoRoot(), '..', 'shared');
const models = path.join(shared, 'models');
const modelDir = (name: string) => path.join(models, name);

const cache = new Map<string, Tokenizer>();
function tokenizer(name: string): Tokenizer {
  let t = cache.get(name);
  if (t === undefined) {
    t = loadTokenizer(modelDir(name));
    cache.set(name, t);
  }
  return t;
}

interface GoldenText {
  text: string;
  tokens: string[];
  ids: number[];
}

function golden(name: string): GoldenText[] {
  return (JSON.parse(fs.readFileSync(path.join(modelDir(name), 'golden.json'), 'utf8')) as { texts: GoldenText[] }).texts;
}

/** RFC 4180 CSV: quoted fields may hold commas, newlines and doubled quotes. */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i += 2;
          continue;
        }
        quoted = false;
      } else {
        field += c;
      }
      i++;
      continue;
    }
    if (c === '"' && field === '') {
      quoted = true;
    } else if (c === ',') {
      row.push(field);
      field = '';
    } else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i++;
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
    } else {
      field += c;
    }
    i++;
  }
  if (field !== '' || row.length > 0) {
    row.push(field);
    rows.push(row);
  }
  return rows;
}

interface CrowsPair {
  index: number;
  more: string;
  less: string;
}

let crowsCache: CrowsPair[] | undefined;
function crowsPairs(): CrowsPair[] {
  if (crowsCache !== undefined) return crowsCache;
  const rows = parseCsv(fs.readFileSync(path.join(shared, 'data', 'crows-pairs', 'crows_pairs_anonymized.csv'), 'utf8'));
  const header = rows[0]!;
  assert.deepEqual(header.slice(0, 5), ['', 'sent_more', 'sent_less', 'stereo_antistereo', 'bias_type']);
  crowsCache = rows.slice(1).map((r) => {
    assert.equal(r.length, header.length, `row ${r[0]} has ${r.length} fields`);
    return { index: Number(r[0]), more: r[1]!, less: r[2]! };
  });
  return crowsCache;
}

function tempDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'dike-tok-'));
}

function writeJson(file: string, v: unknown): void {
  fs.writeFileSync(file, JSON.stringify(v, null, 2));
}

/** A copy of a model folder's tokenizer files, with tokenizer_config.json changed by `edit`. */
function copyWithConfig(name: string, files: string[], edit: (cfg: Record<string, unknown>) => void): string {
  const dir = tempDir();
  for (const f of files) fs.copyFileSync(path.join(modelDir(name), f), path.join(dir, f));
  const cfg = JSON.parse(fs.readFileSync(path.join(modelDir(name), 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
  edit(cfg);
  writeJson(path.join(dir, 'tokenizer_config.json'), cfg);
  return dir;
}

function assertDikeError(fn: () => unknown, file: string, problem: RegExp): DikeError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof DikeError, `expected a DikeError, got ${String(caught)}`);
  assert.equal(caught.file, file);
  assert.match(caught.problem, problem);
  return caught;
}

// ---- golden fixtures -----------------------------------------------------------------------------------

const ALL = ['tiny-bert-mlm', 'tiny-bert-cls', 'small-bert-mlm', 'tiny-gpt2', 'small-gpt2', 'tiny-llama'];

for (const name of ALL) {
  test(`${name}: golden tokens and ids match exactly`, () => {
    const t = tokenizer(name);
    const texts = golden(name);
    assert.equal(texts.length, 4);
    for (const g of texts) {
      const e = t.encode(g.text);
      assert.deepEqual(e.tokens, g.tokens, g.text);
      assert.deepEqual(e.ids, g.ids, g.text);
      assert.deepEqual(e.ids.map((id) => t.idToToken(id)), g.tokens);
      assert.deepEqual(g.tokens.map((s) => t.tokenToId(s)), g.ids);
    }
  });
}

test('kinds, vocabulary sizes and special tokens', () => {
  for (const name of ['tiny-bert-mlm', 'tiny-bert-cls', 'small-bert-mlm']) {
    const t = tokenizer(name);
    assert.equal(t.kind, 'wordpiece');
    assert.equal(t.vocabSize, 30522);
    assert.deepEqual(t.special, { unk: 100, pad: 0, cls: 101, sep: 102, mask: 103 });
    assert.deepEqual([...t.specialIds].sort((a, b) => a - b), [0, 100, 101, 102, 103]);
    assert.equal(t.idToToken(1), '[unused0]');
  }
  for (const name of ['tiny-gpt2', 'small-gpt2']) {
    const t = tokenizer(name);
    assert.equal(t.kind, 'bpe');
    assert.equal(t.vocabSize, 50257);
    assert.deepEqual(t.special, { bos: 50256, eos: 50256, unk: 50256 });
    assert.deepEqual([...t.specialIds], [50256]);
  }
  const llama = tokenizer('tiny-llama');
  assert.equal(llama.kind, 'tokenizer.json');
  assert.equal(llama.vocabSize, 50257);
  assert.deepEqual(llama.special, { bos: 50256, eos: 50256 });
  assert.deepEqual([...llama.specialIds], [50256]);
  assert.equal(llama.idToToken(50256), '<|endoftext|>');
  assert.equal(llama.idToToken(50257), undefined);
  assert.equal(llama.idToToken(-1), undefined);
  assert.equal(llama.idToToken(1.5), undefined);
  assert.equal(llama.tokenToId('no such token'), undefined);
});

test('BERT: addSpecialTokens false drops [CLS] and [SEP]; special tokens in text are matched', () => {
  const t = tokenizer('tiny-bert-mlm');
  const g = golden('tiny-bert-mlm')[1]!;
  const e = t.encode(g.text, { addSpecialTokens: false });
  assert.deepEqual(e.ids, g.ids.slice(1, -1));
  assert.deepEqual(e.tokens, g.tokens.slice(1, -1));

  const m = t.encode('The [MASK] said hello.');
  assert.deepEqual(m.tokens, ['[CLS]', 'the', '[MASK]', 'said', 'hello', '.', '[SEP]']);
  assert.deepEqual(m.ids.slice(0, 3), [101, 1996, 103]);
  // Unknown characters become [UNK]; CJK characters are split one by one.
  assert.deepEqual(t.encode('a \u{1F600} b', { addSpecialTokens: false }).tokens, ['a', '[UNK]', 'b']);
  assert.deepEqual(t.encode('中文', { addSpecialTokens: false }).tokens, ['中', '文']);
  assert.deepEqual(t.encode('', { addSpecialTokens: true }).ids, [101, 102]);
  // Library bugs worked around: CJK outside the BMP is split off, unassigned code points dropped.
  assert.deepEqual(t.encode('a\u{20000}b', { addSpecialTokens: false }).tokens, ['a', '[UNK]', 'b']);
  assert.deepEqual(t.encode('a\u0378b c\u{E0080}', { addSpecialTokens: false }).tokens, ['ab', 'c']);
  assert.deepEqual(t.encodePair('a\u{20000}', 'b').tokens, ['[CLS]', 'a', '[UNK]', '[SEP]', 'b', '[SEP]']);
});

test('BERT: sentence pairs get [CLS] A [SEP] B [SEP] with type ids', () => {
  const t = tokenizer('tiny-bert-cls');
  const p = t.encodePair('Hello world!', 'The nurse.');
  assert.deepEqual(p.tokens, ['[CLS]', 'hello', 'world', '!', '[SEP]', 'the', 'nurse', '.', '[SEP]']);
  assert.deepEqual(p.ids, [101, 7592, 2088, 999, 102, 1996, 6821, 1012, 102]);
  assert.deepEqual(p.typeIds, [0, 0, 0, 0, 0, 1, 1, 1, 1]);
  const q = t.encodePair('Hello world!', 'The nurse.', { addSpecialTokens: false });
  assert.deepEqual(q.ids, [7592, 2088, 999, 1996, 6821, 1012]);
  assert.deepEqual(q.typeIds, [0, 0, 0, 1, 1, 1]);
});

test('BERT: tokenizer_config strip_accents and tokenize_chinese_chars are honoured', () => {
  const files = ['vocab.txt', 'special_tokens_map.json'];
  const keep = copyWithConfig('tiny-bert-mlm', files, (c) => {
    c.strip_accents = false;
    c.tokenize_chinese_chars = false;
  });
  const cased = copyWithConfig('tiny-bert-mlm', files, (c) => {
    c.do_lower_case = false;
  });
  try {
    const t = loadTokenizer(keep);
    // The uncased vocabulary has no accented letters: kept accents make the word unknown.
    assert.deepEqual(t.encode('Café', { addSpecialTokens: false }).tokens, ['[UNK]']);
    assert.deepEqual(tokenizer('tiny-bert-mlm').encode('Café', { addSpecialTokens: false }).tokens, ['cafe']);
    assert.deepEqual(t.encode('中文', { addSpecialTokens: false }).tokens, ['中', '##文']);
    // Not lowercasing: "Hello" is not in the uncased vocabulary as is.
    assert.notDeepEqual(loadTokenizer(cased).encode('Hello', { addSpecialTokens: false }).tokens, ['hello']);
  } finally {
    fs.rmSync(keep, { recursive: true, force: true });
    fs.rmSync(cased, { recursive: true, force: true });
  }
});

test('BERT: decode', () => {
  const t = tokenizer('tiny-bert-mlm');
  const g = golden('tiny-bert-mlm')[1]!;
  assert.equal(t.decode(g.ids), '[CLS] the nurse said that he was tired. [SEP]');
  assert.equal(t.decode(g.ids, { skipSpecialTokens: true }), 'the nurse said that he was tired.');
  assert.equal(t.decode([13675, 13699, 2229]), 'crepes');
  assert.equal(t.decode([]), '');
});

test('GPT-2: special token in text, decode, no BOS by default', () => {
  const t = tokenizer('small-gpt2');
  assert.deepEqual(t.encode('Hello world!<|endoftext|>').ids, [15496, 995, 0, 50256]);
  assert.deepEqual(t.encode('Hello world!', { addSpecialTokens: true }).ids, [15496, 995, 0]);
  assert.equal(t.decode([15496, 995, 0, 50256]), 'Hello world!<|endoftext|>');
  assert.equal(t.decode([50256, 15496, 995, 0], { skipSpecialTokens: true }), 'Hello world!');
  // tokenizer_config.json says clean_up_tokenization_spaces: true, so decode cleans like HF does.
  const ids = t.encode('Yes , I do .').ids;
  assert.equal(t.decode(ids), 'Yes, I do.');
  assert.equal(t.decode(ids, { cleanUpSpaces: false }), 'Yes , I do .');
  const p = t.encodePair('Hello', ' world');
  assert.deepEqual(p.ids, [15496, 995]);
  assert.deepEqual(p.typeIds, [0, 1]);
  assert.throws(() => t.decode([50257]), DikeError);
});

test('GPT-2: add_bos_token and add_prefix_space from tokenizer_config.json', () => {
  const files = ['vocab.json', 'merges.txt', 'special_tokens_map.json'];
  const dir = copyWithConfig('tiny-gpt2', files, (c) => {
    c.add_bos_token = true;
    c.add_prefix_space = true;
  });
  try {
    const t = loadTokenizer(dir);
    assert.deepEqual(t.encode('Hello world!').tokens, ['<|endoftext|>', 'ĠHello', 'Ġworld', '!']);
    assert.deepEqual(t.encode('Hello world!').ids, [50256, 18435, 995, 0]);
    assert.deepEqual(t.encode('Hello world!', { addSpecialTokens: false }).ids, [18435, 995, 0]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('tokenizer.json: add_bos_token / add_eos_token in tokenizer_config.json are honoured', () => {
  const files = ['tokenizer.json', 'special_tokens_map.json'];
  const dir = copyWithConfig('tiny-llama', files, (c) => {
    c.add_bos_token = true;
    c.add_eos_token = true;
  });
  try {
    const t = loadTokenizer(dir);
    assert.deepEqual(t.encode('Hello world!').ids, [50256, 15496, 995, 0, 50256]);
    assert.deepEqual(t.encode('Hello world!', { addSpecialTokens: false }).ids, [15496, 995, 0]);
    const p = t.encodePair('Hello', ' world');
    assert.deepEqual(p.ids, [50256, 15496, 50256, 50256, 995, 50256]);
    assert.deepEqual(p.typeIds, [0, 0, 0, 1, 1, 1]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// ---- CrowS-Pairs ----------------------------------------------------------------------------------------

test('CrowS-Pairs: the CSV has 1,508 pairs', () => {
  const pairs = crowsPairs();
  assert.equal(pairs.length, 1508);
  pairs.forEach((p, i) => assert.equal(p.index, i));
});

test('CrowS-Pairs: GPT-2 token counts of all 3,016 sentences match crows_pairs_sum_ll.json', () => {
  const ref = JSON.parse(fs.readFileSync(path.join(modelDir('small-gpt2'), 'crows_pairs_sum_ll.json'), 'utf8')) as {
    pairs: { index: number; n_tokens_more: number; n_tokens_less: number }[];
  };
  const t = tokenizer('small-gpt2');
  const pairs = crowsPairs();
  assert.equal(ref.pairs.length, pairs.length);
  const wrong: string[] = [];
  for (const r of ref.pairs) {
    const p = pairs[r.index]!;
    const nMore = t.encode(p.more).ids.length;
    const nLess = t.encode(p.less).ids.length;
    if (nMore !== r.n_tokens_more) wrong.push(`${r.index} more: ${nMore} vs ${r.n_tokens_more}`);
    if (nLess !== r.n_tokens_less) wrong.push(`${r.index} less: ${nLess} vs ${r.n_tokens_less}`);
  }
  assert.deepEqual(wrong, []);
});

test('CrowS-Pairs: vocab.json+merges.txt and tokenizer.json give identical ids; byte-level BPE round-trips', () => {
  const gpt2 = tokenizer('tiny-gpt2');
  const llama = tokenizer('tiny-llama');
  let n = 0;
  for (const p of crowsPairs()) {
    for (const s of [p.more, p.less]) {
      const a = gpt2.encode(s);
      const b = llama.encode(s);
      assert.deepEqual(a.ids, b.ids, s);
      assert.deepEqual(a.tokens, b.tokens, s);
      // tiny-llama's tokenizer_config has clean_up_tokenization_spaces false: decode is exact.
      assert.equal(llama.decode(b.ids), s);
      assert.equal(gpt2.decode(a.ids, { cleanUpSpaces: false }), s);
      n++;
    }
  }
  assert.equal(n, 3016);
});

test('byte-level BPE round-trips awkward text', () => {
  const t = tokenizer('tiny-llama');
  const texts = [
    'Café owners in Zürich don\'t serve crêpes — «naïve» résumés, 3.14% off!',
    '  leading and trailing spaces  ',
    'tabs\tand\nnewlines\r\n\n',
    'emoji 😀👍🏽 and CJK 中文 and Ελληνικά',
    "I'LL SHOUT 'quoted' it's they're we've",
    'x<|endoftext|>y',
    '',
  ];
  for (const s of texts) assert.equal(t.decode(t.encode(s).ids), s, JSON.stringify(s));
});

// ---- errors --------------------------------------------------------------------------------------------

test('errors: no tokenizer files', () => {
  const dir = tempDir();
  try {
    const e = assertDikeError(() => loadTokenizer(dir), dir, /^no tokenizer found: expected tokenizer\.json, vocab\.txt, or vocab\.json \+ merges\.txt/);
    assert.ok(e.line().startsWith(dir + ': no tokenizer found'));
    writeJson(path.join(dir, 'vocab.json'), { a: 0 });
    assertDikeError(() => loadTokenizer(dir), dir, /merges\.txt is missing/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const missing = path.join(os.tmpdir(), 'dike-no-such-dir-' + process.pid);
  assertDikeError(() => loadTokenizer(missing), missing, /not found/);
});

test('errors: malformed JSON names the file', () => {
  const dir = tempDir();
  try {
    fs.copyFileSync(path.join(modelDir('tiny-bert-mlm'), 'vocab.txt'), path.join(dir, 'vocab.txt'));
    const tc = path.join(dir, 'tokenizer_config.json');
    fs.writeFileSync(tc, '{"do_lower_case": true,');
    const e = assertDikeError(() => loadTokenizer(dir), tc, /^malformed JSON/);
    assert.ok(e.line().startsWith(`${tc}: malformed JSON`));

    fs.writeFileSync(tc, '{"do_lower_case": "yes"}');
    assertDikeError(() => loadTokenizer(dir), tc, /expected true or false/);

    fs.writeFileSync(tc, '[]');
    assertDikeError(() => loadTokenizer(dir), tc, /JSON object/);

    fs.writeFileSync(tc, '{}');
    const stm = path.join(dir, 'special_tokens_map.json');
    fs.writeFileSync(stm, 'not json');
    assertDikeError(() => loadTokenizer(dir), stm, /^malformed JSON/);
    fs.rmSync(stm);
    // Without any config the BertTokenizer defaults apply.
    assert.deepEqual(loadTokenizer(dir).encode('Hello world!').ids, [101, 7592, 2088, 999, 102]);

    fs.writeFileSync(path.join(dir, 'tokenizer.json'), '{"model": ');
    assertDikeError(() => loadTokenizer(dir), path.join(dir, 'tokenizer.json'), /^malformed JSON/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('errors: malformed merges.txt and vocab.json', () => {
  const dir = tempDir();
  try {
    writeJson(path.join(dir, 'vocab.json'), { a: 0, b: 1, ab: 2 });
    fs.writeFileSync(path.join(dir, 'merges.txt'), '#version: 0.2\na b\nnot-a-pair\n');
    assertDikeError(() => loadTokenizer(dir), path.join(dir, 'merges.txt'), /two symbols/);
    fs.writeFileSync(path.join(dir, 'merges.txt'), '#version: 0.2\na b\n');
    assert.deepEqual(loadTokenizer(dir).encode('ab').tokens, ['ab']);
    writeJson(path.join(dir, 'vocab.json'), { a: 'zero' });
    assertDikeError(() => loadTokenizer(dir), path.join(dir, 'vocab.json'), /integer id/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
