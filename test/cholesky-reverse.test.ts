/**
 * choleskyInverseUpperBlocked (compress/gemm.ts) reverses the order of H̃'s rows and columns with
 * Float64Array.reverse() on the flat row-major array, in place when the caller lends its H
 * (`overwrite`), instead of copying element by element into new arrays. The result must be the
 * numbers of the element-wise route, bit for bit: here that route is written out in the test
 * (dampen, J·H̃·J by indices, blocked Cholesky and inverse, J·M⁻¹·J by indices).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Gemm, blockedCholesky, blockedLowerInverse, choleskyInverseUpperBlocked } from '../src/compress/gemm.js';
import { dampen } from '../src/compress/linalg.js';

function spd(n: number, seed: number): Float64Array {
  let s = seed;
  const rnd = (): number => ((s = (s * 16807) % 2147483647) / 2147483647) - 0.5;
  const T = n + 7;
  const X = Float64Array.from({ length: T * n }, rnd);
  for (let t = 0; t < T; t++) X[t * n + 3] = 0; // a dead input (H row and column 3 zero): dampen's diagonal fix
  const H = new Float64Array(n * n);
  for (let t = 0; t < T; t++) for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) H[i * n + j]! += X[t * n + i]! * X[t * n + j]!;
  return H;
}

async function byIndices(gemm: Gemm, H: Float64Array, n: number, damp: number): Promise<{ U: Float64Array; lambda: number }> {
  const { H: Hd, lambda } = dampen(H, n, damp);
  const rev = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) rev[(n - 1 - i) * n + (n - 1 - j)] = Hd[i * n + j]!;
  const { L, diagInvT } = await blockedCholesky(gemm, rev, n);
  const Minv = await blockedLowerInverse(gemm, L, n, diagInvT);
  const U = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) U[(n - 1 - i) * n + (n - 1 - j)] = Minv[i * n + j]!;
  return { U, lambda };
}

describe('choleskyInverseUpperBlocked: the in-place reversal gives the element-wise route bit for bit', () => {
  for (const n of [5, 300, 600]) {
    it(`n = ${n}`, async () => {
      const gemm = new Gemm(2);
      try {
        const H = spd(n, 11 + n);
        const want = await byIndices(gemm, H, n, 0.01);
        const kept = H.slice();
        const got = await choleskyInverseUpperBlocked(gemm, H, n, 0.01);
        assert.ok(H.every((v, i) => Object.is(v, kept[i])), 'without overwrite, H is left as it was');
        const lent = await choleskyInverseUpperBlocked(gemm, H.slice(), n, 0.01, { overwrite: true });
        for (const r of [got, lent]) {
          assert.equal(r.lambda, want.lambda);
          assert.ok(r.U.every((v, i) => Object.is(v, want.U[i])), 'same U');
        }
        // U is upper triangular with a positive diagonal (a sanity check of the route itself).
        for (let i = 0; i < n; i++) {
          assert.ok(want.U[i * n + i]! > 0);
          for (let j = 0; j < i; j++) assert.equal(want.U[i * n + j], 0);
        }
      } finally {
        await gemm.dispose();
      }
    });
  }
});
