/**
 * Fair-GPTQ beyond the tiny-llama goldens (gptq-goldens.test.ts): layout independence on GPT-2's
 * Conv1D, the paper's layer selections, the `ignore` rule, Dikē's protocol and one-line errors.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { DATA, assertOneLineError, dike, loadModelCached as load, modelDir, scratchDir } from './fixtures.js';
import type { Checkpoint, Param } from '../src/model/checkpoint.js';
import type { AnyFamily, LinearInfo } from '../src/model/arch/types.js';
import type { GraphBuilder } from '../src/model/graph/build.js';
import { applyRecipe, parseRecipe } from '../src/compress/recipe.js';
import { inputStats } from '../src/compress/calibrate.js';
import { ModelRunner, padBatch } from '../src/runtime/session.js';
import { dequantizeState } from '../src/compress/quantizer.js';
import { alphaFor, fairGptq, pairCalibration, selectedLayers } from '../src/compress/methods/fair-gptq.js';
import { sentencePairs } from '../src/measure/pairs.js';
import type { PairSource, SentencePair } from '../src/compress/types.js';
import { DikeError } from '../src/errors.js';

const pairs: PairSource = (req) => sentencePairs(DATA, req);

const recipe = (o: Record<string, unknown>) =>
  parseRecipe(JSON.stringify({ seed: 0, steps: [{ method: 'fair-gptq', bits: 4, group_size: 32, alpha: 0.5, pairs: 'stereoset', pairs_limit: 16, ...o }] }), 'fair.json');

/**
 * The same GPT-2 with every Conv1D weight transposed into nn.Linear form ([out, in], y = x·Wᵀ): the
 * family's graph is built unchanged, with the builder asked for the transposed weight and a Gemm
 * with transB, and its inventory says `out-in`. Every number the method sees is then the same up to
 * the GEMM's summation order, so a layout slip (a transposed update, an [in, out] integer form)
 * would show as wholesale disagreement.
 */
function asLinear(ckpt: Checkpoint): Checkpoint {
  const convs = new Set(ckpt.family.linears(ckpt.config, ckpt.task).filter((l: LinearInfo) => l.layout === 'in-out').map((l: LinearInfo) => l.weight));
  const family: AnyFamily = {
    ...ckpt.family,
    linears: (c, t) => ckpt.family.linears(c, t).map((l: LinearInfo) => ({ ...l, layout: 'out-in' as const })),
    body: (b: GraphBuilder, cfg: unknown, blocks) => {
      const weight = b.weight.bind(b);
      const gemm = b.gemm.bind(b);
      b.weight = (name: string, shape: readonly number[]) => (convs.has(name) ? weight(name, [shape[1]!, shape[0]!]) : weight(name, shape));
      b.gemm = (a: string, w: string, c: string | undefined, transB: boolean) => (convs.has(w) && !transB ? gemm(a, w, c, true) : gemm(a, w, c, transB));
      ckpt.family.body(b, cfg, blocks);
    },
  };
  const params = new Map<string, Param>();
  for (const [name, p] of ckpt.params) {
    if (!convs.has(name)) {
      params.set(name, p);
      continue;
    }
    const [i, o] = p.shape as [number, number];
    const data = new Float32Array(i * o);
    for (let r = 0; r < i; r++) for (let c = 0; c < o; c++) data[c * i + r] = p.data[r * o + c]!;
    params.set(name, { ...p, shape: [o, i], data });
  }
  return { ...ckpt, family, params };
}

describe('fair-gptq on GPT-2 (Conv1D, stored [in, out])', () => {
  for (const mode of ['sequential', 'one-shot'] as const) {
    it(`${mode}: equals the method on the same model in nn.Linear form`, async (t) => {
      const conv = load('tiny-gpt2');
      const r = recipe({ calibration: mode });
      const a = await applyRecipe(conv, r, { threads: 1, pairs });
      const b = await applyRecipe(asLinear(conv), r, { threads: 1, pairs });
      let worst = 1;
      for (const l of conv.family.linears(conv.config, conv.task).filter((x: LinearInfo) => x.module !== 'head')) {
        const qa = dequantizeState(a.quantized.get(l.weight)!);
        const qb = dequantizeState(b.quantized.get(l.weight)!);
        const sa = a.quantized.get(l.weight)!;
        let same = 0;
        for (let i = 0; i < qa.length; i++) if (Math.abs(qa[i]! - qb[i]!) < 0.5 * sa.scales[Math.floor(i / l.inDim) * (sa.scales.length / l.outDim) + Math.floor((i % l.inDim) / sa.groupSize)]!) same++;
        worst = Math.min(worst, same / qa.length);
        // The written Conv1D weight is the transpose of the Linear-form one, and equals its integer form.
        const w = a.params.get(l.weight)!.data;
        for (let o = 0; o < l.outDim; o += 7) for (let i = 0; i < l.inDim; i += 5) assert.equal(w[i * l.outDim + o], qa[o * l.inDim + i]);
      }
      t.diagnostic(`worst matrix agreement Conv1D vs Linear form: ${worst}`);
      // Measured: 1 (every matrix, both modes); the two graphs differ only in the GEMM's transB.
      assert.ok(worst >= 0.999, `worst ${worst}`);
      const ra = a.reports[0]!;
      assert.ok(ra.every((m) => m.detail!['protocol'] === 'dike' && m.detail!['calibration'] === mode && (m.detail!['bias_QdX_sq'] as number) > 0));
    });
  }
});

describe('fair-gptq options', () => {
  it('select_layers: the paper\'s lower / upper / lower-upper 10% (n = ⌈L/10⌉ rounded up to even)', () => {
    assert.deepEqual([...selectedLayers('lower', 24)], [0, 1, 2, 3]);
    assert.deepEqual([...selectedLayers('upper', 24)], [20, 21, 22, 23]);
    assert.deepEqual([...selectedLayers('lower-upper', 24)], [0, 1, 22, 23]);
    assert.deepEqual([...selectedLayers('upper', 32)], [28, 29, 30, 31]);
    assert.deepEqual([...selectedLayers('all', 3)], [0, 1, 2]);
    assert.deepEqual([...selectedLayers('0,2', 3)], [0, 2]);
    assert.throws(() => selectedLayers('5', 3), (e: unknown) => e instanceof DikeError && /block 5 does not exist/.test(e.message));
  });

  it('ignore: kinds matched in the module name as the authors\' ignore_bias, with their OPT / Mistral lists', () => {
    const l = (weight: string, layer = 0): LinearInfo => ({ weight, layout: 'out-in', inDim: 1, outDim: 1, layer, module: 'attention', role: 'q', seqGroup: 0 });
    const all = new Set([0, 1]);
    assert.equal(alphaFor(l('model.decoder.layers.0.self_attn.k_proj.weight'), { alpha: 0.1, ignore: 'opt' }, all), 0);
    assert.equal(alphaFor(l('model.decoder.layers.0.fc2.weight'), { alpha: 0.1, ignore: 'opt' }, all), 0.1);
    assert.equal(alphaFor(l('model.layers.1.mlp.gate_proj.weight', 1), { alpha: 0.1, ignore: 'mistral' }, all), 0);
    assert.equal(alphaFor(l('model.layers.1.mlp.down_proj.weight', 1), { alpha: 0.1, ignore: 'mistral' }, new Set([0])), 0);
    assert.equal(alphaFor(l('transformer.h.0.attn.c_proj.weight'), { alpha: 0.1, ignore: 'attn.c_proj' }, all), 0);
    assert.equal(alphaFor(l('transformer.h.0.mlp.c_proj.weight'), { alpha: 0.1, ignore: 'attn.c_proj' }, all), 0.1);
  });

  it('Dikē\'s protocol: BOS + text, pads dropped; the authors\': no BOS, eos pads kept', () => {
    const ckpt = load('tiny-gpt2');
    const dike = pairCalibration({ model: ckpt, pairs }, fairGptq.parseOptions({ bits: 4, pairs_limit: 4 }, 't'), 't');
    const authors = pairCalibration({ model: ckpt, pairs }, fairGptq.parseOptions({ bits: 4, pairs_limit: 4, protocol: 'authors' }, 't'), 't');
    assert.equal(dike.sequences.length, 8);
    assert.deepEqual(dike.sequences.map((s) => s.slice(1)), authors.sequences);
    assert.ok(dike.sequences.every((s) => s[0] === 50256));
    assert.equal(dike.batching.keepPads, false);
    assert.deepEqual(authors.batching, { rows: 2, keepPads: true, padId: 50256, paired: true });
    assert.equal(fairGptq.parseOptions({ bits: 4, protocol: 'authors' }, 't').symmetric_range, 'reference');
  });

  it('a pair with a sentence longer than the model\'s positions is left out whole, and the source says so', () => {
    const ckpt = load('tiny-gpt2');
    const long = { stereotype: 'word '.repeat(40).trim(), antiStereotype: 'short one.' } as SentencePair;
    const short = { stereotype: 'The man was kind.', antiStereotype: 'The woman was kind.' } as SentencePair;
    const two = [short, long];
    const m = { ...ckpt, shape: { ...ckpt.shape, maxPositions: 20 } };
    const set = pairCalibration({ model: m, pairs: () => two }, fairGptq.parseOptions({ bits: 4 }, 't'), 't');
    const tok = (t: string): number[] => [50256, ...ckpt.tokenizer.encode(t, { addSpecialTokens: false }).ids];
    assert.ok(tok(long.stereotype).length > 20 && tok(short.stereotype).length <= 20 && tok(short.antiStereotype).length <= 20);
    assert.deepEqual(set.sequences, [tok(short.stereotype), tok(short.antiStereotype)]);
    assert.match(JSON.stringify(set.spec), /1 of 2 longer than the model's 20 positions left out/);
    assert.throws(() => pairCalibration({ model: m, pairs: () => [long] }, fairGptq.parseOptions({ bits: 4 }, 't'), 't'), /every sentence pair .* longer than the model's 20 positions/);
  });

  it('bad options and a missing pair source are one-line errors naming the step and key', async () => {
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ select_layers: 'upp' }, /"select_layers".*lower-upper/],
      [{ act_order: true }, /without act_order/],
      [{ sum_hessians: 2 }, /"sum_hessians"/],
      [{ protocol: 'theirs' }, /"protocol".*dike, authors/],
      [{ pairs_limit: 0 }, /"pairs_limit"/],
    ];
    for (const [o, re] of bad) assert.throws(() => recipe(o), (e: unknown) => e instanceof DikeError && re.test(e.message) && !e.message.includes('\n'), JSON.stringify(o));
    await assert.rejects(applyRecipe(load('tiny-gpt2'), recipe({})), (e: unknown) => e instanceof DikeError && /no pair source/.test(e.message));
  });
});

describe('dike compress --method fair-gptq', () => {
  it('writes a model whose compression.json records the method, its calibration mode and the pairs', () => {
    const out = scratchDir('fair-cli');
    const r = dike(['compress', modelDir('tiny-gpt2'), '--method', 'fair-gptq', '--bits', '4', '--group-size', '32', '--opt', 'alpha=0.5', '--opt', 'sum_hessians=0',
      '--opt', 'pairs=stereoset', '--opt', 'pairs_limit=8', '--opt', 'calibration=one-shot', '--opt', 'select_layers=lower', '--data', DATA, '--out', path.join(out, 'm')]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /fair-gptq on 8 matrices/);
    const cj = JSON.parse(readFileSync(path.join(out, 'm', 'compression.json'), 'utf8'));
    assert.equal(cj.steps[0].calibration, 'one-shot');
    assert.equal(cj.recipe.steps[0].select_layers, 'lower');
    const m = cj.steps[0].matrices as { weight: string; detail: Record<string, unknown> }[];
    // tiny-gpt2 has 2 blocks: ⌈0.2⌉ = 1, rounded up to even = 2, so "lower" is both.
    assert.ok(m.every((x) => x.detail['alpha'] === 0.5 && x.detail['pairs'] === 8 && typeof x.detail['pair_tokens_sha256'] === 'string'));
    const bad = dike(['compress', modelDir('tiny-gpt2'), '--method', 'fair-gptq', '--bits', '4', '--opt', 'calibration=twice', '--data', DATA, '--out', path.join(out, 'bad')]);
    assertOneLineError(bad, '--opt calibration', 'sequential, one-shot');
  });
});

describe('pair statistics under Dikē\'s protocol (pads dropped), checked on sentences run one at a time', () => {
  it('tiny-bert-mlm layer 0 query: G = Σ x xᵀ over real tokens, Σ ΔΔᵀ over positions real in both', async (t) => {
    const ckpt = load('tiny-bert-mlm');
    const set = pairCalibration({ model: ckpt, pairs }, fairGptq.parseOptions({ bits: 4, pairs_limit: 12 }, 't'), 't');
    // 12 pairs in batches of 16 rows: pairs of unequal length and a second, partial batch.
    assert.ok(set.sequences.some((s, i) => i % 2 === 0 && s.length !== set.sequences[i + 1]!.length));
    const q = ckpt.family.linears(ckpt.config, ckpt.task).find((l: LinearInfo) => l.layer === 0 && l.role === 'q')!;
    const s = (await inputStats(ckpt, ckpt.params, [q], set, { threads: 1, pairs: true })).get(q.weight)!;
    // The input of layer 0's query is hidden.0 (embeddings after LayerNorm), from each sentence alone.
    const runner = await ModelRunner.create(ckpt, { threads: 1 });
    const H = ckpt.shape.hiddenSize;
    const G = new Float64Array(H * H);
    const D = new Float64Array(H * H);
    let tokens = 0;
    let pairTokens = 0;
    try {
      const alone = async (ids: number[]): Promise<Float32Array> => (await runner.hidden(padBatch([ids], 0), [0]))[0]!;
      for (let i = 0; i < set.sequences.length; i += 2) {
        const a = await alone(set.sequences[i]!);
        const b = await alone(set.sequences[i + 1]!);
        for (const x of [a, b]) {
          const n = x.length / H;
          tokens += n;
          for (let p = 0; p < n; p++) for (let r = 0; r < H; r++) for (let c = 0; c < H; c++) G[r * H + c]! += x[p * H + r]! * x[p * H + c]!;
        }
        const n = Math.min(a.length, b.length) / H;
        pairTokens += n;
        for (let p = 0; p < n; p++) {
          for (let r = 0; r < H; r++) {
            const dr = a[p * H + r]! - b[p * H + r]!;
            for (let c = 0; c < H; c++) D[r * H + c]! += dr * (a[p * H + c]! - b[p * H + c]!);
          }
        }
      }
    } finally {
      await runner.dispose();
    }
    assert.equal(s.tokens, tokens);
    assert.equal(s.pairs, 12);
    assert.equal(s.pairTokens, pairTokens);
    const rel = (x: Float64Array, y: Float64Array): number => {
      let m = 0;
      let d = 0;
      for (let i = 0; i < x.length; i++) {
        m = Math.max(m, Math.abs(y[i]!));
        d = Math.max(d, Math.abs(x[i]! - y[i]!));
      }
      return d / m;
    };
    t.diagnostic(`max relative difference: G ${rel(s.gram, G).toExponential(2)}, ΣΔΔᵀ ${rel(s.pairGram!, D).toExponential(2)}`);
    // float32 Grams from ORT against float64 sums here; worst measured 1.6e-7 (G), 7.3e-8 (Σ ΔΔᵀ).
    assert.ok(rel(s.gram, G) < 1e-6, `G: ${rel(s.gram, G)}`);
    assert.ok(rel(s.pairGram!, D) < 1e-6, `ΣΔΔᵀ: ${rel(s.pairGram!, D)}`);
  });
});
