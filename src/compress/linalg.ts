/**
 * Dense linear algebra for second-order compression (SparseGPT, GPTQ): symmetric positive-definite
 * matrices as row-major n×n Float64Arrays. Everything here is float64, so that the ill-conditioned
 * Hessians of wide layers (n = 3072, often fewer calibration tokens than inputs) factor reliably.
 *
 *   cholesky(A)                 lower L with A = L Lᵀ
 *   choleskyInverse(L)          A⁻¹ = L⁻ᵀ L⁻¹
 *   lowerInverseT(L)            (L⁻¹)ᵀ, upper triangular (the blocked GEMM versions in gemm.ts build on it)
 *   deadInputs(H) / dampen(H)   the preparation both papers apply to H before inverting it
 *   choleskyInverseUpper(H)     upper U with (H + λI)⁻¹ = Uᵀ U: the "Hinv" rows that GPTQ
 *                               (Frantar et al. 2023, §3 "Cholesky reformulation") and SparseGPT
 *                               (Frantar & Alistarh 2023, Algorithm 1) read
 *   reconstructionError(W, Ŵ, G) ‖(W − Ŵ)X‖²_F from the Gram matrix G = X Xᵀ
 *
 * The kernels are blocked four rows at a time so that every element streamed from memory feeds four
 * independent multiply-adds (JavaScript does not vectorise, so independent chains are what is fast).
 */
import { DikeError } from '../errors.js';

const FILE = 'compress/linalg';

/**
 * Σ_{k∈[k0,k1)} P_a[k]·Q_b[k] for four rows a of P (starting at offset p, stride n) and two rows b of
 * Q (offsets q0, q1), into out[4b + a]: the 4×2 register block that the factorisations below are
 * built from (eight independent chains, six loads per eight multiply-adds).
 */
function dots4x2(P: Float64Array, p: number, n: number, Q: Float64Array, q0: number, q1: number, k0: number, k1: number, out: Float64Array): void {
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0, t0 = 0, t1 = 0, t2 = 0, t3 = 0;
  const p1 = p + n, p2 = p1 + n, p3 = p2 + n;
  for (let k = k0; k < k1; k++) {
    const a0 = P[p + k]!, a1 = P[p1 + k]!, a2 = P[p2 + k]!, a3 = P[p3 + k]!;
    const u = Q[q0 + k]!, v = Q[q1 + k]!;
    s0 += a0 * u; s1 += a1 * u; s2 += a2 * u; s3 += a3 * u;
    t0 += a0 * v; t1 += a1 * v; t2 += a2 * v; t3 += a3 * v;
  }
  out[0] = s0; out[1] = s1; out[2] = s2; out[3] = s3;
  out[4] = t0; out[5] = t1; out[6] = t2; out[7] = t3;
}

function dot(P: Float64Array, p: number, Q: Float64Array, q: number, k0: number, k1: number): number {
  let s0 = 0, s1 = 0;
  let k = k0;
  for (; k + 1 < k1; k += 2) {
    s0 += P[p + k]! * Q[q + k]!;
    s1 += P[p + k + 1]! * Q[q + k + 1]!;
  }
  if (k < k1) s0 += P[p + k]! * Q[q + k]!;
  return s0 + s1;
}

/**
 * Lower Cholesky factor L (A = L Lᵀ, positive diagonal) of a symmetric positive-definite n×n matrix.
 * Reads only the lower triangle of A; the strict upper triangle of L is zero. Throws a DikeError
 * naming the pivot when A is not (numerically) positive definite.
 */
export function cholesky(A: Float64Array, n: number): Float64Array {
  checkSquare(A, n, 'cholesky');
  const L = new Float64Array(n * n);
  const s = new Float64Array(8);
  // Row-oriented (left-looking): L_ij = (A_ij − Σ_{k<j} L_ik L_jk) / L_jj, four rows i at a time.
  let i0 = 0;
  for (; i0 + 4 <= n; i0 += 4) {
    // Columns j < i0 (already final), two at a time.
    for (let j = 0; j < i0; j += 2) {
      const rj = j * n, rj1 = rj + n;
      dots4x2(L, i0 * n, n, L, rj, rj1, 0, j, s);
      const d0 = L[rj + j]!, d1 = L[rj1 + j + 1]!, l10 = L[rj1 + j]!;
      for (let a = 0; a < 4; a++) {
        const ri = (i0 + a) * n;
        const x = (A[ri + j]! - s[a]!) / d0;
        L[ri + j] = x;
        L[ri + j + 1] = (A[ri + j + 1]! - s[4 + a]! - x * l10) / d1;
      }
    }
    for (let i = i0; i < i0 + 4; i++) choleskyRowTail(A, L, n, i, i0);
  }
  for (let i = i0; i < n; i++) {
    for (let j = 0; j < i0; j++) L[i * n + j] = (A[i * n + j]! - dot(L, i * n, L, j * n, 0, j)) / L[j * n + j]!;
    choleskyRowTail(A, L, n, i, i0);
  }
  return L;
}

/** Entries j ∈ [from, i] of row i of L, the earlier entries of the row being final. */
function choleskyRowTail(A: Float64Array, L: Float64Array, n: number, i: number, from: number): void {
  const ri = i * n;
  for (let j = from; j <= i; j++) {
    const v = A[ri + j]! - dot(L, ri, L, j * n, 0, j);
    if (i === j) {
      if (!(v > 0)) throw new DikeError(FILE, `cholesky pivot ${i}`, `matrix is not positive definite (pivot ${v}); increase the dampening`);
      L[ri + i] = Math.sqrt(v);
    } else L[ri + j] = v / L[j * n + j]!;
  }
}

/**
 * Transpose of the inverse of a lower-triangular n×n matrix: Y = (L⁻¹)ᵀ, upper triangular.
 * With X = L⁻¹, X_ij = −(Σ_{k=j}^{i−1} L_ik X_kj) / L_ii and X_ii = 1 / L_ii; storing Y = Xᵀ makes
 * the sum a dot product of two contiguous rows, L_i and Y_j, blocked four rows i at a time.
 */
export function lowerInverseT(L: Float64Array, n: number): Float64Array {
  const Y = new Float64Array(n * n);
  const s = new Float64Array(8);
  let i0 = 0;
  const finish = (rows: number): void => {
    // Diagonal block: rows i0..i0+rows−1, columns j from i0 to i.
    for (let i = i0; i < i0 + rows; i++) {
      const ri = i * n;
      for (let j = i0; j < i; j++) Y[j * n + i] = -dot(L, ri, Y, j * n, j, i) / L[ri + i]!;
      Y[i * n + i] = 1 / L[ri + i]!;
    }
  };
  for (; i0 + 4 <= n; i0 += 4) {
    for (let j = 0; j < i0; j += 2) {
      const yj = j * n, yj1 = yj + n;
      // Σ over k ∈ [j+1, i0) for both columns, then the k = j term of column j.
      dots4x2(L, i0 * n, n, Y, yj, yj1, j + 1, i0, s);
      const yjj = Y[yj + j]!;
      for (let c = 0; c < 2; c++) {
        const jj = j + c;
        const yrow = jj * n;
        for (let a = 0; a < 4; a++) {
          const ri = (i0 + a) * n;
          let v = s[4 * c + a]! + (c === 0 ? L[ri + j]! * yjj : 0);
          // The part of the sum inside this block of rows: k ∈ [i0, i).
          for (let k = i0; k < i0 + a; k++) v += L[ri + k]! * Y[yrow + k]!;
          Y[yrow + i0 + a] = -v / L[ri + i0 + a]!;
        }
      }
    }
    finish(4);
  }
  for (let i = i0; i < n; i++) {
    const ri = i * n;
    for (let j = 0; j < i0; j++) Y[j * n + i] = -dot(L, ri, Y, j * n, j, i) / L[ri + i]!;
  }
  finish(n - i0);
  return Y;
}

/** A⁻¹ (full, symmetric) from the lower Cholesky factor L of A: A⁻¹ = L⁻ᵀ L⁻¹ = Y Yᵀ with Y = L⁻ᵀ. */
export function choleskyInverse(L: Float64Array, n: number): Float64Array {
  checkSquare(L, n, 'choleskyInverse');
  const Y = lowerInverseT(L, n);
  const inv = new Float64Array(n * n);
  // (Y Yᵀ)_ij = Σ_{k ≥ max(i, j)} Y_ik Y_jk (Y is upper triangular).
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      const v = dot(Y, i * n, Y, j * n, i, n);
      inv[i * n + j] = v;
      inv[j * n + i] = v;
    }
  }
  return inv;
}

/**
 * Inputs that were never active on the calibration set (H_jj = 0). Both SparseGPT and GPTQ set
 * their diagonal to 1 before inverting and zero the weights that read them (they act on nothing).
 */
export function deadInputs(H: Float64Array, n: number): number[] {
  checkSquare(H, n, 'deadInputs');
  const dead: number[] = [];
  for (let j = 0; j < n; j++) if (H[j * n + j] === 0) dead.push(j);
  return dead;
}

/**
 * A copy of H (H itself when `inPlace`) ready to invert: dead inputs' diagonal set to 1, then
 * λ = damp · mean(diag H) added to the diagonal (GPTQ/SparseGPT "percdamp", 0.01 by convention; the mean is taken after the dead fix,
 * as the reference implementations do). Returns the copy and λ.
 */
export function dampen(H: Float64Array, n: number, damp: number, inPlace = false): { H: Float64Array; lambda: number } {
  checkSquare(H, n, 'dampen');
  if (!(damp >= 0)) throw new DikeError(FILE, 'dampen', `dampening must be ≥ 0, found ${damp}`);
  const out = inPlace ? H : H.slice();
  let trace = 0;
  for (let j = 0; j < n; j++) {
    if (out[j * n + j] === 0) out[j * n + j] = 1;
    trace += out[j * n + j]!;
  }
  const lambda = n === 0 ? 0 : (damp * trace) / n;
  for (let j = 0; j < n; j++) out[j * n + j]! += lambda;
  return { H: out, lambda };
}

/**
 * Upper-triangular U with (H̃)⁻¹ = Uᵀ U, where H̃ = dampen(H, n, damp).H — what torch computes as
 * cholesky(cholesky_inverse(cholesky(H̃)), upper=True) in GPTQ/SparseGPT. Row i of U, from the
 * diagonal on, is the OBS update direction for eliminating input i once inputs < i are fixed, and
 * U_ii² = [H̃_{i:,i:}⁻¹]_00 (the diagonal of the inverse of the not-yet-eliminated block).
 *
 * Computed with half the work of that three-factorisation route: with J the order reversal,
 * J H̃ J = M Mᵀ (lower Cholesky) gives H̃ = R Rᵀ with R = J M J upper, so H̃⁻¹ = R⁻ᵀ R⁻¹ and
 * U = R⁻¹ = J M⁻¹ J (the upper Cholesky factor is unique given a positive diagonal).
 * The caller zeroes the weights of deadInputs(H).
 */
export function choleskyInverseUpper(H: Float64Array, n: number, damp: number): Float64Array {
  const { H: Hd } = dampen(H, n, damp);
  const rev = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) rev[(n - 1 - i) * n + (n - 1 - j)] = Hd[i * n + j]!;
  const Y = lowerInverseT(cholesky(rev, n), n); // Y = M⁻ᵀ
  const U = new Float64Array(n * n);
  for (let a = 0; a < n; a++) for (let b = a; b < n; b++) U[a * n + b] = Y[(n - 1 - b) * n + (n - 1 - a)]!;
  return U;
}

/**
 * ‖(W − Ŵ) X‖²_F = trace(D G Dᵀ) with D = W − Ŵ ([rows, cols], row-major, [out, in] orientation) and
 * G = X Xᵀ the [cols, cols] Gram matrix of the layer's inputs (InputStats.gram). The layer-wise
 * objective that SparseGPT (eq. 1) and GPTQ minimise. Zero entries of D are skipped, so a pruned
 * matrix with untouched survivors costs O(rows · nnz(D_row)²).
 */
export function reconstructionError(
  W: ArrayLike<number>,
  What: ArrayLike<number>,
  gram: Float64Array,
  rows: number,
  cols: number,
): number {
  if (W.length !== rows * cols || What.length !== rows * cols) throw new DikeError(FILE, 'reconstructionError', `weights must have ${rows}×${cols} entries, found ${W.length} and ${What.length}`);
  checkSquare(gram, cols, 'reconstructionError');
  const idx = new Int32Array(cols);
  const d = new Float64Array(cols);
  let total = 0;
  for (let r = 0; r < rows; r++) {
    let m = 0;
    const o = r * cols;
    for (let j = 0; j < cols; j++) {
      const v = W[o + j]! - What[o + j]!;
      if (v !== 0) {
        idx[m] = j;
        d[m++] = v;
      }
    }
    // d G dᵀ using symmetry: Σ_a d_a² G_aa + 2 Σ_{b<a} d_a d_b G_ab, over the nonzero entries when
    // they are few, else over the whole row with contiguous reads of G.
    if (2 * m > cols) {
      for (let j = 0; j < cols; j++) d[j] = W[o + j]! - What[o + j]!;
      for (let a = 0; a < cols; a++) {
        const da = d[a]!;
        if (da === 0) continue;
        total += da * (da * gram[a * cols + a]! + 2 * dot(d, 0, gram, a * cols, 0, a));
      }
    } else {
      for (let a = 0; a < m; a++) {
        const ga = idx[a]! * cols;
        let s = 0;
        for (let b = 0; b < a; b++) s += d[b]! * gram[ga + idx[b]!]!;
        total += d[a]! * (d[a]! * gram[ga + idx[a]!]! + 2 * s);
      }
    }
  }
  return total;
}

function checkSquare(A: ArrayLike<number>, n: number, where: string): void {
  if (!Number.isInteger(n) || n < 0 || A.length !== n * n) throw new DikeError(FILE, where, `expected a ${n}×${n} matrix, found ${A.length} entries`);
}
