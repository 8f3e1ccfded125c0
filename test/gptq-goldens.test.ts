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
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { MODELS, loadModelCached as load, scratchDir } from './fixtures.js';
import { readSafetensors, toFloat32 } from '../src/model/safetensors.js';
import { applyRecipe, parseRecipe, type CompressionResult } from '../src/compress/recipe.js';
import { dequantizeState } from '../src/compress/quantizer.js';
import type { MatrixReport } from '../src/compress/types.js';
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
after(() => undefined);

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
      // Worst measured: see the commit message / README (both modes ≥ 0.99).
      for (const s of shares) assert.ok(s.share >= 0.99, `${s.name}: ${s.share}`);
      const total = totalOf(res.reports.flat(), 'error');
      t.diagnostic(`‖(W−Q)X‖² total ${total} vs golden ${run.totals.err_WQX_sq} (${((total / run.totals.err_WQX_sq - 1) * 100).toFixed(4)}%)`);
      assert.ok(Math.abs(total / run.totals.err_WQX_sq - 1) < 0.01, `total ${total} vs ${run.totals.err_WQX_sq}`);
      assert.ok(res.reports.flat().every((r) => r.detail?.['calibration'] === mode));
    });
  }
});
