/**
 * GPTQ (and Fair-GPTQ) against the outputs of the authors' own code on tiny-llama
 * (../shared/models/tiny-llama/fair_gptq/, README there): GPTQModel v2.2.0 with upunaprosk/fair-gptq
 * at 3167b103, run in PyTorch float32. The `a0` files are plain GPTQ, bit-identical to GPTQModel's,
 * for sequential (`true_sequential`) and one-shot calibration.
 *
 * Protocol (theirs, reproduced through Dikē's general calibration options): the 64 StereoSet pairs'
 * token ids as given (no BOS), batches of 2 [stereotype; anti-stereotype] right-padded with 50256,
 * pads kept in the statistics; 4 bits, group 32, symmetric with the reference's range, damp 0.01.
 *
 * Agreement is counted per matrix as the share of weights on the same grid point as the golden
 * (|ŵ − ŵ_golden| < half the golden's step); the README's own float-rounding noise floor (pair
 * order, float64 activations, an independent re-implementation) is ≥ 99.9%, a wrong H or pad
 * handling changes the codes wholesale, so ≥ 99% separates the two.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { DATA, MODELS, loadModelCached as load, scratchDir } from './fixtures.js';
import { readSafetensors, toFloat32 } from '../src/model/safetensors.js';
import { applyRecipe, parseRecipe, type CompressionResult, type Recipe } from '../src/compress/recipe.js';
import { inputStats, walkCalibration } from '../src/compress/calibrate.js';
import { fairGptq, fairPreUpdate, pairCalibration } from '../src/compress/methods/fair-gptq.js';
import { gptqTargets } from '../src/compress/methods/gptq.js';
import { Gemm } from '../src/compress/gemm.js';
import { sentencePairs } from '../src/measure/pairs.js';
import { dequantizeState } from '../src/compress/quantizer.js';
import type { MatrixReport, PairSource, QuantState } from '../src/compress/types.js';
import { readFileSync } from 'node:fs';

export const FAIR = path.join(MODELS, 'tiny-llama', 'fair_gptq');

export interface FairGolden {
  pairs: { stereotype: string; anti_stereotype: string; stereotype_ids: number[]; anti_stereotype_ids: number[] }[];
  runs: Record<string, { file: string; totals: { err_WQX_sq: number; bias_QdX_sq: number; bias_WdX_sq: number }; per_matrix: Record<string, { err_WQX_sq: number; bias_QdX_sq: number }> }>;
}

export function fairGolden(): FairGolden {
  return JSON.parse(readFileSync(path.join(FAIR, 'tiny-llama.json'), 'utf8')) as FairGolden;
}

/** Dequantized golden matrices ([out, in]) with their step size, by module path. */
export function goldenMatrices(file: string): Map<string, { rows: number; cols: number; q: Float64Array; step: Float64Array }> {
  const st = readSafetensors(path.join(FAIR, file));
  const out = new Map<string, { rows: number; cols: number; q: Float64Array; step: Float64Array }>();
  for (const name of st.tensors.keys()) {
    if (!name.endsWith('.qcodes4')) continue;
    const p = name.slice(0, -'.qcodes4'.length);
    const packed = st.tensors.get(name)!;
    const scales = toFloat32(st.tensors.get(`${p}.scales`)!);
    const zeros = st.tensors.get(`${p}.zeros`)!.bytes;
    const [rows, half] = packed.shape as [number, number];
    const cols = 2 * half;
    const groups = scales.length / rows;
    const gs = cols / groups;
    const q = new Float64Array(rows * cols);
    const step = new Float64Array(rows * cols);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const code = (packed.bytes[r * half + (c >> 1)]! >> (4 * (c % 2))) & 15;
        const g = r * groups + Math.floor(c / gs);
        q[r * cols + c] = scales[g]! * (code - zeros[g]!);
        step[r * cols + c] = scales[g]!;
      }
    }
    out.set(p, { rows, cols, q, step });
  }
  return out;
}

/** The pairs' token ids as one calibration file: [stereotype, anti-stereotype] per pair, in order. */
export function pairTokensFile(g: FairGolden, dir: string): string {
  const file = path.join(dir, 'pairs-tokens.json');
  writeFileSync(file, JSON.stringify(g.pairs.flatMap((p) => [p.stereotype_ids, p.anti_stereotype_ids])));
  return file;
}

/** Share of weights on the golden's grid point, per matrix (worst first). */
export function agreement(res: CompressionResult, golden: ReturnType<typeof goldenMatrices>): { name: string; share: number }[] {
  const out: { name: string; share: number }[] = [];
  for (const [p, g] of golden) {
    const state = res.quantized.get(`${p}.weight`);
    assert.ok(state, `no quantized form for ${p}`);
    const ours = dequantizeState(state);
    let same = 0;
    for (let i = 0; i < ours.length; i++) if (Math.abs(ours[i]! - g.q[i]!) < 0.5 * g.step[i]!) same++;
    out.push({ name: p, share: same / ours.length });
  }
  return out.sort((a, b) => a.share - b.share);
}

export function totalOf(reports: MatrixReport[], key: string): number {
  return reports.reduce((s, r) => s + (r.detail?.[key] as number), 0);
}

const dir = scratchDir('gptq-goldens');

describe('gptq on the GPTQModel v2.2.0 goldens (tiny-llama, authors\' protocol)', () => {
  const g = fairGolden();
  const tokens = pairTokensFile(g, dir);
  for (const mode of ['one-shot', 'sequential'] as const) {
    const run = g.runs[`${mode === 'one-shot' ? 'oneshot' : 'sequential'}/a0`]!;
    it(`${mode}: ≥ 99% of every matrix on the golden grid point, ‖(W−Q)X‖² total within 1%`, async (t) => {
      const recipe = parseRecipe(
        JSON.stringify({
          seed: 0,
          calibration: { tokens, batch_size: 2, keep_pads: true, pad_id: 50256 },
          steps: [{ method: 'gptq', bits: 4, group_size: 32, symmetric: true, symmetric_range: 'reference', calibration: mode }],
        }),
        path.join(dir, 'recipe.json'),
      );
      const res = await applyRecipe(load('tiny-llama'), recipe, { threads: 1 });
      const shares = agreement(res, goldenMatrices(run.file));
      t.diagnostic(`agreement: worst ${shares[0]!.name} ${shares[0]!.share.toFixed(5)}, mean ${(shares.reduce((s, x) => s + x.share, 0) / shares.length).toFixed(5)}`);
      // Worst measured: one-shot 0.99980 (layer 1 down_proj), sequential 1.0; totals within 1e-8.
      for (const s of shares) assert.ok(s.share >= 0.99, `${s.name}: ${s.share}`);
      const total = totalOf(res.reports.flat(), 'error');
      t.diagnostic(`‖(W−Q)X‖² total ${total} vs golden ${run.totals.err_WQX_sq} (${((total / run.totals.err_WQX_sq - 1) * 100).toFixed(4)}%)`);
      assert.ok(Math.abs(total / run.totals.err_WQX_sq - 1) < 0.01, `total ${total} vs ${run.totals.err_WQX_sq}`);
      assert.ok(res.reports.flat().every((r) => r.detail?.['calibration'] === mode));
    });
  }
});

// ---- Fair-GPTQ ------------------------------------------------------------------------------------

const pairs: PairSource = (req) => sentencePairs(DATA, req);

function fairRecipe(o: Record<string, unknown>): Recipe {
  return parseRecipe(
    JSON.stringify({ seed: 0, steps: [{ method: 'fair-gptq', bits: 4, group_size: 32, pairs: 'stereoset', pairs_limit: 64, protocol: 'authors', ...o }] }),
    'fair.json',
  );
}

describe('fair-gptq on the authors\' goldens (tiny-llama, protocol=authors)', () => {
  const g = fairGolden();

  it('the StereoSet pairs, tokenized under the authors\' protocol, are the goldens\' token ids', () => {
    const ckpt = load('tiny-llama');
    const set = pairCalibration({ model: ckpt, pairs: (req) => pairs(req) }, fairGptq.parseOptions({ pairs: 'stereoset', pairs_limit: 64, protocol: 'authors', bits: 4 }, 't'), 't');
    assert.deepEqual(set.sequences, g.pairs.flatMap((p) => [p.stereotype_ids, p.anti_stereotype_ids]));
    assert.deepEqual(set.batching, { rows: 2, keepPads: true, padId: 50256, paired: true });
  });

  it('H and H_x01 as the authors accumulated them (debug_H, one-shot, α = 0.5)', async (t) => {
    const ckpt = load('tiny-llama');
    const dbg = readSafetensors(path.join(FAIR, 'debug_H__tiny-llama__oneshot__a0.5_sh0.safetensors'));
    const set = pairCalibration({ model: ckpt, pairs }, fairGptq.parseOptions({ pairs: 'stereoset', pairs_limit: 64, protocol: 'authors', bits: 4 }, 't'), 't');
    const all = ckpt.family.linears(ckpt.config, ckpt.task);
    const names = ['model.layers.0.self_attn.q_proj', 'model.layers.0.mlp.down_proj'];
    const stats = await inputStats(ckpt, ckpt.params, all.filter((l) => names.includes(l.weight.replace(/\.weight$/, ''))), set, { threads: 1, pairs: true });
    const alpha = 0.5;
    for (const p of names) {
      const s = stats.get(`${p}.weight`)!;
      const K = s.pairs!;
      assert.equal(K, 64);
      const relErr = (ours: (i: number) => number, ref: Float32Array): number => {
        let num = 0;
        let den = 0;
        for (let i = 0; i < ref.length; i++) {
          num = Math.max(num, Math.abs(ours(i) - ref[i]!));
          den = Math.max(den, Math.abs(ref[i]!));
        }
        return num / den;
      };
      // H = (1/K) Σ (X0X0ᵀ + X1X1ᵀ), H_x01 = (2α/K) Σ ΔΔᵀ, pads included.
      const eH = relErr((i) => s.gram[i]! / K, toFloat32(dbg.tensors.get(`${p}.H`)!));
      const eX = relErr((i) => ((2 * alpha) / K) * s.pairGram![i]!, toFloat32(dbg.tensors.get(`${p}.H_x01`)!));
      const eW = relErr((i) => ckpt.params.get(`${p}.weight`)!.data[i]!, toFloat32(dbg.tensors.get(`${p}.W_dense`)!));
      t.diagnostic(`${p}: max |ΔH|/max|H| ${eH.toExponential(2)}, H_x01 ${eX.toExponential(2)}, W ${eW}`);
      // float32 accumulation in both (ORT's GEMM here, torch's running average there) on activations
      // equal to float32 rounding; worst measured 2.5e-7 (H) and 4.4e-7 (H_x01, down_proj).
      assert.ok(eH < 2e-6, `${p} H: ${eH}`);
      assert.ok(eX < 2e-6, `${p} H_x01: ${eX}`);
      assert.equal(eW, 0);
    }
  });

  const SETTINGS = [['a0', 0, 0], ['a0.5_sh0', 0.5, 0], ['a0.5_sh1', 0.5, 1], ['a5_sh0', 5, 0], ['a5_sh1', 5, 1]] as const;
  for (const mode of ['one-shot', 'sequential'] as const) {
    for (const [setting, alpha, sh] of SETTINGS) {
      const run = g.runs[`${mode === 'one-shot' ? 'oneshot' : 'sequential'}/${setting}`]!;
      // Free-running sequential with α ≠ 0 cannot be matched weight for weight by an implementation
      // that is not bit-identical to torch's float32 pre-update. Cause (traced): when a group's
      // extreme |w| sits at the group's first column, w/scale = ±7.5·(1 ± δ) with δ the float32
      // rounding of scale = 2·max|w|/15, so whether it lands on code −8 or −7 is decided by the last
      // bits of the pre-updated W (f32 torch there, f64 rounded to f32 here). At a0.5_sh0 one such
      // site in layer 0 up_proj (row 31, column 0, w/scale = −7.500000) went the other way (5 weights
      // of that row differ after GPTQ's feedback);
      // the changed up_proj changes every later input, and the pre-update and GPTQ's row-wise
      // error feedback spread that (layer 0 down_proj 92%, layer 1 down_proj 69%; at a5_sh1 48%).
      // Dikē is stable against its own float noise (Grams perturbed by 1e-6: 100% unchanged).
      // So these runs are checked matrix by matrix below, each group on inputs computed with the
      // golden's own earlier groups (teacher-forced, ≥ 99.3%); here ‖(W−Q)X‖² (worst 0.081%).
      const chaotic = mode === 'sequential' && alpha !== 0;
      it(`${mode} ${setting}: ${chaotic ? '‖(W−Q)X‖² total within 1% (free-running)' : '≥ 99% on the golden grid points; ‖(W−Q)X‖² and ‖Q(X0−X1)‖² totals within 1%'}`, async (t) => {
        const res = await applyRecipe(load('tiny-llama'), fairRecipe({ alpha, sum_hessians: sh, calibration: mode }), { threads: 1, pairs });
        const shares = agreement(res, goldenMatrices(run.file));
        const reports = res.reports.flat();
        const err = totalOf(reports, 'error');
        const bias = totalOf(reports, 'bias_QdX_sq');
        const biasW = totalOf(reports, 'bias_WdX_sq');
        t.diagnostic(
          `worst ${shares[0]!.name} ${shares[0]!.share.toFixed(5)}; err ${(100 * (err / run.totals.err_WQX_sq - 1)).toFixed(4)}%, ` +
            `bias ${(100 * (bias / run.totals.bias_QdX_sq - 1)).toFixed(4)}%, dense bias ${(100 * (biasW / run.totals.bias_WdX_sq - 1)).toFixed(4)}%`,
        );
        assert.ok(Math.abs(err / run.totals.err_WQX_sq - 1) < 0.01, `‖(W−Q)X‖² ${err} vs ${run.totals.err_WQX_sq}`);
        if (chaotic) return;
        // Worst measured: 0.99365 (one-shot a0.5_sh0, layer 1 k_proj: one row after a first-column tie
        // as above); totals within 0.013%.
        for (const s of shares) assert.ok(s.share >= 0.99, `${s.name}: ${s.share}`);
        assert.ok(Math.abs(bias / run.totals.bias_QdX_sq - 1) < 0.01, `‖Q(X0−X1)‖² ${bias} vs ${run.totals.bias_QdX_sq}`);
        assert.ok(Math.abs(biasW / run.totals.bias_WdX_sq - 1) < 0.01, `‖W(X0−X1)‖² ${biasW} vs ${run.totals.bias_WdX_sq}`);
      });
    }
  }

  for (const [setting, alpha, sh] of SETTINGS.filter(([, a]) => a !== 0)) {
    const run = g.runs[`sequential/${setting}`]!;
    it(`sequential ${setting}, teacher-forced: each group on inputs computed with the golden's earlier groups; ≥ 99% per matrix, totals within 1%`, async (t) => {
      const ckpt = load('tiny-llama');
      const golden = goldenMatrices(run.file);
      const params = new Map([...ckpt.params].map(([k, p]) => [k, { ...p, data: p.data.slice() }]));
      const opts = fairGptq.parseOptions({ bits: 4, group_size: 32, pairs: 'stereoset', pairs_limit: 64, protocol: 'authors', alpha, sum_hessians: sh }, 't');
      const set = pairCalibration({ model: ckpt, pairs }, opts, 't');
      const targets = ckpt.family.linears(ckpt.config, ckpt.task);
      const quantized = new Map<string, QuantState>();
      const reports: MatrixReport[] = [];
      const gemm = new Gemm();
      const shares: { name: string; share: number }[] = [];
      try {
        await walkCalibration(ckpt, params, targets, set, { mode: 'sequential', granularity: 'group', pairs: true, threads: 1 }, async (ts, stats) => {
          reports.push(...(await gptqTargets(gemm, { params, quantized }, ts, stats, opts, 'fair-gptq', fairPreUpdate(gemm, opts, () => alpha))));
          for (const tg of ts) {
            const gm = golden.get(tg.weight.replace(/\.weight$/, ''))!;
            const ours = dequantizeState(quantized.get(tg.weight)!);
            let same = 0;
            for (let i = 0; i < ours.length; i++) if (Math.abs(ours[i]! - gm.q[i]!) < 0.5 * gm.step[i]!) same++;
            shares.push({ name: tg.weight, share: same / ours.length });
            params.get(tg.weight)!.data.set(Float32Array.from(gm.q)); // continue from the golden's Q
          }
        });
      } finally {
        await gemm.dispose();
      }
      shares.sort((a, b) => a.share - b.share);
      const err = totalOf(reports, 'error');
      const biasW = totalOf(reports, 'bias_WdX_sq');
      t.diagnostic(`worst ${shares[0]!.name} ${shares[0]!.share.toFixed(5)}; err ${(100 * (err / run.totals.err_WQX_sq - 1)).toFixed(4)}%, dense bias ${(100 * (biasW / run.totals.bias_WdX_sq - 1)).toFixed(4)}%`);
      // Worst measured: 0.99316 (a5_sh0, layer 1 q_proj); totals within 0.007%.
      for (const s of shares) assert.ok(s.share >= 0.99, `${s.name}: ${s.share}`);
      assert.ok(Math.abs(err / run.totals.err_WQX_sq - 1) < 0.01, `‖(W−Q)X‖² ${err} vs ${run.totals.err_WQX_sq}`);
      assert.ok(Math.abs(biasW / run.totals.bias_WdX_sq - 1) < 0.01, `‖W(X0−X1)‖² ${biasW} vs ${run.totals.bias_WdX_sq}`);
    });
  }
});
