/**
 * The testbed's GPTQ-fragile set (src/testbed/fragile-gptq.ts): every point the projection returns must
 * quantize, under the real GPTQ (src/compress/methods/gptq.ts, golden-tested elsewhere), to exactly the
 * codes and scales of the skewed matrix B, while keeping part of the change.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Gemm } from '../src/compress/gemm.js';
import { gptqMatrix, prepareHessian } from '../src/compress/methods/gptq.js';
import { matrixSet, projectGptq } from '../src/testbed/fragile-gptq.js';
import type { LinearInfo } from '../src/model/arch/types.js';

function lcg(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return s / 2147483648 - 0.5;
  };
}

const opts = (group_size: number) => ({ bits: 4, group_size, symmetric: true, static_groups: false, block_size: 128 });

function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const t = new Float32Array(rows * cols);
  for (let o = 0; o < rows; o++) for (let i = 0; i < cols; i++) t[i * rows + o] = a[o * cols + i]!;
  return t;
}

describe('GPTQ-fragile projection', () => {
  for (const [cols, group] of [[384, 32], [48, -1]] as const) {
    for (const layout of ['out-in', 'in-out'] as const) {
      it(`${cols} inputs, group ${group}, ${layout}: projected points have B's GPTQ codes and scales, and move`, async () => {
        const gemm = new Gemm(1);
        try {
          const rnd = lcg(cols + (layout === 'in-out' ? 7 : 0));
          const rows = 24;
          const tokens = 3 * cols;
          // Correlated inputs: x = A·g with g standard-ish, so H has a spread spectrum.
          const A = Float64Array.from({ length: cols * cols }, () => rnd() * (rnd() > 0.3 ? 1 : 0.05));
          const gram = new Float64Array(cols * cols);
          const x = new Float64Array(cols);
          for (let t = 0; t < tokens; t++) {
            const g = Float64Array.from({ length: cols }, rnd);
            for (let i = 0; i < cols; i++) {
              let acc = 0;
              for (let k = 0; k < cols; k++) acc += A[i * cols + k]! * g[k]!;
              x[i] = acc + 0.01 * rnd();
            }
            for (let i = 0; i < cols; i++) for (let j = 0; j < cols; j++) gram[i * cols + j]! += x[i]! * x[j]!;
          }
          const h = await prepareHessian(gemm, { gram, tokens, dim: cols }, 0.01, false);
          const Wb = Float32Array.from({ length: rows * cols }, rnd); // [out, in]
          const qb = await gptqMatrix(gemm, Wb, rows, cols, h, opts(group));
          const info = { weight: 'w', layout, outDim: rows, inDim: cols } as unknown as LinearInfo;
          const store = (a: Float32Array): Float32Array => (layout === 'out-in' ? a.slice() : transpose(a, rows, cols));
          const load = (a: Float32Array): Float32Array => (layout === 'out-in' ? a.slice() : transpose(a, cols, rows));
          const set = matrixSet(info, store(Wb), store(qb.weights), qb.state, h.U);
          // B itself is in the set: the projection leaves it (to float32 rounding of the stored values).
          const same = store(Wb);
          projectGptq(set, same);
          const wb = store(Wb);
          for (let i = 0; i < same.length; i++) assert.ok(Math.abs(same[i]! - wb[i]!) <= 1e-6, `B moved at ${i}`);
          // A large random change: about a third of a step on every entry.
          const step = Math.max(...qb.state.scales);
          const moved = store(Float32Array.from(Wb, (w) => w + 0.35 * step * rnd() * 2));
          projectGptq(set, moved);
          const Wm = load(moved);
          const qm = await gptqMatrix(gemm, Wm, rows, cols, h, opts(group));
          let codesDiffer = 0;
          for (let i = 0; i < qm.state.codes.length; i++) if (qm.state.codes[i] !== qb.state.codes[i]) codesDiffer++;
          assert.equal(codesDiffer, 0, 'GPTQ codes of the projected matrix differ from B\'s');
          for (let i = 0; i < qm.state.scales.length; i++) assert.ok(Math.abs(qm.state.scales[i]! - qb.state.scales[i]!) <= 1e-6 * qb.state.scales[i]!, `scale ${i}`);
          // It kept a real change (not just B): most entries moved by more than 1% of a step.
          let changed = 0;
          for (let i = 0; i < Wm.length; i++) if (Math.abs(Wm[i]! - Wb[i]!) > 0.01 * step) changed++;
          assert.ok(changed > 0.5 * Wm.length, `only ${changed} of ${Wm.length} entries kept a change`);
          // Projecting again changes nothing (the result is in the set).
          const again = moved.slice();
          projectGptq(set, again);
          for (let i = 0; i < again.length; i++) assert.ok(Math.abs(again[i]! - moved[i]!) <= 1e-6, `not idempotent at ${i}: ${moved[i]} → ${again[i]}`);
        } finally {
          await gemm.dispose();
        }
      });
    }
  }
});
