/**
 * The float64 linear algebra behind SparseGPT and GPTQ (src/compress/linalg.ts): hand-computed
 * factors and inverses of small matrices, the dead-input and dampening rules, the reconstruction
 * error against an explicit X, and identities (L Lᵀ = A, U A Uᵀ = I) on a random 37×37 matrix
 * whose size exercises the kernels' four-row blocking and its remainder.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { DikeError } from '../src/errors.js';
import { cholesky, choleskyInverse, choleskyInverseUpper, dampen, deadInputs, reconstructionError } from '../src/compress/linalg.js';

function close(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    assert.ok(Math.abs(actual[i]! - expected[i]!) <= tol, `${what}[${i}] = ${actual[i]}, expected ${expected[i]}`);
  }
}

/** Seeded uniform(−0.5, 0.5) numbers (an LCG), so the random cases are the same on every run. */
function lcg(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return s / 2147483648 - 0.5;
  };
}

function matmul(A: ArrayLike<number>, B: ArrayLike<number>, n: number, k: number, m: number): Float64Array {
  const C = new Float64Array(n * m);
  for (let i = 0; i < n; i++) for (let j = 0; j < m; j++) {
    let s = 0;
    for (let t = 0; t < k; t++) s += A[i * k + t]! * B[t * m + j]!;
    C[i * m + j] = s;
  }
  return C;
}

function transpose(A: ArrayLike<number>, n: number, m: number): Float64Array {
  const T = new Float64Array(n * m);
  for (let i = 0; i < n; i++) for (let j = 0; j < m; j++) T[j * n + i] = A[i * m + j]!;
  return T;
}

function identity(n: number): Float64Array {
  const I = new Float64Array(n * n);
  for (let i = 0; i < n; i++) I[i * n + i] = 1;
  return I;
}

// The classic example: [[4, 12, −16], [12, 37, −43], [−16, −43, 98]] = L Lᵀ with L = [[2,0,0],[6,1,0],[−8,5,3]];
// L⁻¹ = [[1/2,0,0],[−3,1,0],[19/3,−5/3,1/3]] by forward substitution, so A⁻¹ = L⁻ᵀL⁻¹ is:
const A3 = Float64Array.from([4, 12, -16, 12, 37, -43, -16, -43, 98]);
const A3inv = [1777 / 36, -122 / 9, 19 / 9, -122 / 9, 34 / 9, -5 / 9, 19 / 9, -5 / 9, 1 / 9];

describe('cholesky', () => {
  it('factors hand-computed 2×2 and 3×3 matrices', () => {
    close(cholesky(Float64Array.from([4, 2, 2, 3]), 2), [2, 0, 1, Math.SQRT2], 1e-15, 'L');
    close(cholesky(A3, 3), [2, 0, 0, 6, 1, 0, -8, 5, 3], 1e-12, 'L');
  });

  it('reads only the lower triangle', () => {
    close(cholesky(Float64Array.from([4, 999, -7, 12, 37, 555, -16, -43, 98]), 3), [2, 0, 0, 6, 1, 0, -8, 5, 3], 1e-12, 'L');
  });

  it('rejects a matrix that is not positive definite with a DikeError naming the pivot', () => {
    assert.throws(() => cholesky(Float64Array.from([1, 2, 2, 1]), 2), (e: unknown) => e instanceof DikeError && /pivot 1/.test(e.message) && /dampening/.test(e.message));
    assert.throws(() => cholesky(new Float64Array(3), 2), DikeError);
  });

  it('gives L Lᵀ = A on a random 37×37 matrix, L lower with positive diagonal', () => {
    const n = 37;
    const r = lcg(7);
    const X = Float64Array.from({ length: n * 50 }, r);
    const A = matmul(X, transpose(X, n, 50), n, 50, n);
    const L = cholesky(A, n);
    for (let i = 0; i < n; i++) {
      assert.ok(L[i * n + i]! > 0);
      for (let j = i + 1; j < n; j++) assert.equal(L[i * n + j], 0);
    }
    close(matmul(L, transpose(L, n, n), n, n, n), A, 1e-12, 'L Lᵀ');
  });
});

describe('choleskyInverse', () => {
  it('inverts hand-computed 2×2 and 3×3 matrices', () => {
    close(choleskyInverse(cholesky(Float64Array.from([4, 2, 2, 3]), 2), 2), [3 / 8, -2 / 8, -2 / 8, 4 / 8], 1e-15, 'A⁻¹');
    close(choleskyInverse(cholesky(A3, 3), 3), A3inv, 1e-11, 'A⁻¹');
  });

  it('gives A⁻¹ A = I on a random 37×37 matrix', () => {
    const n = 37;
    const r = lcg(11);
    const X = Float64Array.from({ length: n * 60 }, r);
    const A = matmul(X, transpose(X, n, 60), n, 60, n);
    close(matmul(choleskyInverse(cholesky(A, n), n), A, n, n, n), identity(n), 1e-9, 'A⁻¹A');
  });
});

describe('deadInputs and dampen', () => {
  it('finds zero diagonals, sets them to 1 and adds damp · mean(diag) after that fix', () => {
    const H = Float64Array.from([2, 0, 0, 0]);
    assert.deepEqual(deadInputs(H, 2), [1]);
    assert.deepEqual(deadInputs(A3, 3), []);
    const { H: Hd, lambda } = dampen(H, 2, 0.1);
    // diag (2, 0) → (2, 1), mean 1.5, λ = 0.15
    assert.ok(Math.abs(lambda - 0.15) < 1e-15);
    close(Hd, [2.15, 0, 0, 1.15], 1e-15, 'dampened H');
    assert.deepEqual([...H], [2, 0, 0, 0], 'the input is not modified');
  });

  it('rejects a negative dampening', () => {
    assert.throws(() => dampen(A3, 3, -0.01), DikeError);
  });
});

describe('choleskyInverseUpper', () => {
  it('gives the upper factor of A⁻¹ for a hand-computed 2×2 matrix', () => {
    // A⁻¹ = [[3/8, −1/4], [−1/4, 1/2]] = UᵀU with U = [[a, b], [0, c]]: a² = 3/8, ab = −1/4, b² + c² = 1/2.
    const a = Math.sqrt(3 / 8);
    close(choleskyInverseUpper(Float64Array.from([4, 2, 2, 3]), 2, 0), [a, -0.25 / a, 0, 1 / Math.sqrt(3)], 1e-15, 'U');
  });

  it('gives UᵀU = A⁻¹ for the 3×3 example, with U_00² = [A⁻¹]_00 and U_22² = 1/A_22', () => {
    const U = choleskyInverseUpper(A3, 3, 0);
    for (let i = 0; i < 3; i++) for (let j = 0; j < i; j++) assert.equal(U[i * 3 + j], 0, 'upper triangular');
    close(matmul(transpose(U, 3, 3), U, 3, 3, 3), A3inv, 1e-10, 'UᵀU');
    assert.ok(Math.abs(U[0]! - Math.sqrt(1777) / 6) < 1e-12);
    assert.ok(Math.abs(U[8]! - 1 / Math.sqrt(98)) < 1e-15);
  });

  it('handles a dead input and the dampening: H = diag(2, 0), damp 0.1 → U = diag(1/√2.15, 1/√1.15)', () => {
    close(choleskyInverseUpper(Float64Array.from([2, 0, 0, 0]), 2, 0.1), [1 / Math.sqrt(2.15), 0, 0, 1 / Math.sqrt(1.15)], 1e-15, 'U');
  });

  it('gives U (H + λI) Uᵀ = I on a random rank-deficient 37×37 Gram matrix (20 tokens)', () => {
    const n = 37;
    const t = 20;
    const r = lcg(3);
    const X = Float64Array.from({ length: n * t }, r);
    const H = matmul(X, transpose(X, n, t), n, t, n);
    const U = choleskyInverseUpper(H, n, 0.01);
    let mean = 0;
    for (let i = 0; i < n; i++) mean += H[i * n + i]! / n;
    const Hd = H.slice();
    for (let i = 0; i < n; i++) Hd[i * n + i]! += 0.01 * mean;
    for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) assert.equal(U[i * n + j], 0);
    close(matmul(matmul(U, Hd, n, n, n), transpose(U, n, n), n, n, n), identity(n), 1e-8, 'U H Uᵀ');
  });
});

describe('reconstructionError', () => {
  it('is trace((W − Ŵ) G (W − Ŵ)ᵀ) on hand-computed cases', () => {
    const G = Float64Array.from([4, 2, 2, 3]);
    assert.equal(reconstructionError([1, 2], [0, 2], G, 1, 2), 4); // D = [1, 0]: 1·4·1
    assert.equal(reconstructionError([1, 2], [0, 3], G, 1, 2), 3); // D = [1, −1]: 4 − 2·2 + 3
    assert.equal(reconstructionError([1, 2, 5, 5], [0, 2, 5, 4], G, 2, 2), 7); // rows add: 4 + 3
    assert.equal(reconstructionError([1, 2], [1, 2], G, 1, 2), 0);
  });

  it('equals ‖(W − Ŵ)X‖² computed token by token from an explicit X', () => {
    const rows = 3, cols = 5, tokens = 9;
    const r = lcg(5);
    const X = Float64Array.from({ length: cols * tokens }, r); // [cols, tokens]
    const W = Float64Array.from({ length: rows * cols }, r);
    const G = matmul(X, transpose(X, cols, tokens), cols, tokens, cols);
    // Every entry changed (pruned and updated), and only the pruned ones (1–2 of 5 per row).
    for (const What of [W.map((w, i) => (i % 3 === 0 ? 0 : w + (i % 2 ? 0.1 : -0.05))), W.map((w, i) => (i % 3 === 0 ? 0 : w))]) {
      let direct = 0;
      for (let t = 0; t < tokens; t++) {
        for (let o = 0; o < rows; o++) {
          let y = 0;
          for (let j = 0; j < cols; j++) y += (W[o * cols + j]! - What[o * cols + j]!) * X[j * tokens + t]!;
          direct += y * y;
        }
      }
      assert.ok(direct > 0);
      assert.ok(Math.abs(reconstructionError(W, What, G, rows, cols) - direct) <= 1e-12 * Math.max(1, direct));
    }
  });

  it('rejects mismatched sizes', () => {
    assert.throws(() => reconstructionError([1, 2, 3], [1, 2], Float64Array.from([1, 0, 0, 1]), 1, 2), DikeError);
  });
});
