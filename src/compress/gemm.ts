/**
 * Float64 matrix products on ONNX Runtime's CPU Gemm (MLAS), for the O(n³) parts of second-order
 * compression: GPTQ's lazy-batch updates and a blocked Cholesky of the inverse Hessian. JavaScript
 * reaches about 1 GFLOP/s on these loops; ORT's kernels are roughly ten times faster per core, which
 * is what makes GPTQ of a BERT-base-size model take seconds per layer rather than minutes.
 *
 * Matrices are row-major Float64Arrays. Each product shape (transposes, alpha, with or without C) is
 * one tiny ONNX model with symbolic dimensions, built once per `Gemm` and reused for every size.
 * MLAS splits a product over rows and columns of the output, never over the inner dimension, so
 * results do not depend on the thread count.
 */
import ort from 'onnxruntime-node';
import onnxProto from 'onnx-proto';
import { DikeError } from '../errors.js';
import { ortSessionOptions } from '../runtime/session.js';
import { cholesky, dampen, lowerInverseT } from './linalg.js';

const { onnx } = onnxProto;
const FILE = 'compress/gemm';
/** ONNX TensorProto.DataType DOUBLE. */
const DOUBLE = 11;

interface Variant {
  transA: boolean;
  transB: boolean;
  alpha: number;
  /** Add C (beta = 1). */
  withC: boolean;
}

function gemmModel(v: Variant): Uint8Array {
  const T = onnx.AttributeProto.AttributeType;
  const info = (name: string, dims: string[]): onnxProto.onnx.IValueInfoProto => ({
    name,
    type: { tensorType: { elemType: DOUBLE, shape: { dim: dims.map((d) => ({ dimParam: d })) } } },
  });
  const inputs = [info('A', v.transA ? ['k', 'm'] : ['m', 'k']), info('B', v.transB ? ['n', 'k'] : ['k', 'n'])];
  if (v.withC) inputs.push(info('C', ['m', 'n']));
  const model: onnxProto.onnx.IModelProto = {
    irVersion: 8,
    producerName: 'dike',
    opsetImport: [{ domain: '', version: 17 }],
    graph: {
      name: 'gemm',
      input: inputs,
      output: [info('Y', ['m', 'n'])],
      node: [
        {
          name: 'gemm',
          opType: 'Gemm',
          domain: '',
          input: v.withC ? ['A', 'B', 'C'] : ['A', 'B'],
          output: ['Y'],
          attribute: [
            { name: 'transA', type: T.INT, i: v.transA ? 1 : 0 },
            { name: 'transB', type: T.INT, i: v.transB ? 1 : 0 },
            { name: 'alpha', type: T.FLOAT, f: v.alpha },
            { name: 'beta', type: T.FLOAT, f: 1 },
          ],
        },
      ],
    },
  };
  return onnx.ModelProto.encode(model).finish();
}

/** Float64 GEMM on ONNX Runtime. Create once, use for many products, `dispose()` at the end. */
export class Gemm {
  private readonly sessions = new Map<string, Promise<ort.InferenceSession>>();

  constructor(private readonly threads?: number) {}

  private session(v: Variant): Promise<ort.InferenceSession> {
    const key = `${+v.transA}${+v.transB}${v.alpha}${+v.withC}`;
    let s = this.sessions.get(key);
    if (s === undefined) {
      // Dikē's session options: between products the caller runs JavaScript, so pools do not spin.
      this.sessions.set(key, (s = ort.InferenceSession.create(gemmModel(v), ortSessionOptions(this.threads))));
    }
    return s;
  }

  /**
   * Y = alpha · op(A) · op(B) (+ C), op = transpose when asked; Y is [m, n]. A is [m, k] ([k, m] when
   * transA), B is [k, n] ([n, k] when transB). Arrays may be subarray views.
   */
  async product(
    A: Float64Array,
    B: Float64Array,
    m: number,
    k: number,
    n: number,
    o: { transA?: boolean; transB?: boolean; alpha?: number; C?: Float64Array } = {},
  ): Promise<Float64Array> {
    const v: Variant = { transA: o.transA ?? false, transB: o.transB ?? false, alpha: o.alpha ?? 1, withC: o.C !== undefined };
    if (A.length !== m * k || B.length !== k * n || (o.C !== undefined && o.C.length !== m * n)) {
      throw new DikeError(FILE, 'product', `shapes do not match: A ${A.length}, B ${B.length}, C ${o.C?.length ?? '-'} for m=${m} k=${k} n=${n}`);
    }
    if (m === 0 || n === 0) return new Float64Array(m * n);
    if (k === 0) return o.C !== undefined ? o.C.slice() : new Float64Array(m * n);
    const feeds: Record<string, ort.Tensor> = {
      A: new ort.Tensor('float64', A, v.transA ? [k, m] : [m, k]),
      B: new ort.Tensor('float64', B, v.transB ? [n, k] : [k, n]),
    };
    if (o.C !== undefined) feeds['C'] = new ort.Tensor('float64', o.C, [m, n]);
    const out = await (await this.session(v)).run(feeds);
    return out['Y']!.data as Float64Array;
  }

  async dispose(): Promise<void> {
    for (const s of this.sessions.values()) await (await s).release();
    this.sessions.clear();
  }
}

/** Rows [r0, r1) × columns [c0, c1) of a row-major matrix with `ld` columns, as a contiguous copy. */
export function block(A: Float64Array, ld: number, r0: number, r1: number, c0: number, c1: number): Float64Array {
  const w = c1 - c0;
  const out = new Float64Array((r1 - r0) * w);
  for (let r = r0; r < r1; r++) out.set(A.subarray(r * ld + c0, r * ld + c1), (r - r0) * w);
  return out;
}

function putBlock(A: Float64Array, ld: number, r0: number, c0: number, src: Float64Array, rows: number, cols: number): void {
  for (let r = 0; r < rows; r++) A.set(src.subarray(r * cols, (r + 1) * cols), (r0 + r) * ld + c0);
}

/**
 * Lower Cholesky factor of a symmetric positive-definite n×n matrix, left-looking by block columns of
 * `nb` (Golub & Van Loan, Matrix Computations, 4th ed., §4.2.9): block column k is
 * A[k:, k] − L[k:, :k]·L[k, :k]ᵀ (one GEMM, n³/6 multiply-adds in all), its diagonal block is
 * factored by linalg.cholesky, and the rows below are multiplied by L_kk⁻ᵀ. Also returns
 * Y_k = L_kk⁻ᵀ of every diagonal block, which the inverse reuses.
 */
export async function blockedCholesky(gemm: Gemm, A: Float64Array, n: number, nb = 256): Promise<{ L: Float64Array; diagInvT: Float64Array[] }> {
  const L = new Float64Array(n * n);
  const diagInvT: Float64Array[] = [];
  for (let k = 0; k < n; k += nb) {
    const m = n - k;
    const kb = Math.min(nb, m);
    let panel = block(A, n, k, n, k, k + kb); // m×kb
    if (k > 0) panel = await gemm.product(block(L, n, k, n, 0, k), block(L, n, k, k + kb, 0, k), m, k, kb, { transB: true, alpha: -1, C: panel });
    let Lkk: Float64Array;
    try {
      Lkk = cholesky(panel.subarray(0, kb * kb), kb);
    } catch (e) {
      if (e instanceof DikeError) throw new DikeError(FILE, `cholesky block at ${k}`, e.problem);
      throw e;
    }
    putBlock(L, n, k, k, Lkk, kb, kb);
    const Y = lowerInverseT(Lkk, kb);
    diagInvT.push(Y);
    if (m > kb) putBlock(L, n, k + kb, k, await gemm.product(panel.subarray(kb * kb), Y, m - kb, kb, kb), m - kb, kb);
  }
  return { L, diagInvT };
}

/**
 * Inverse X = L⁻¹ of a lower-triangular n×n matrix by block columns (forward substitution on
 * L X = I, Golub & Van Loan §3.1): X_jj = L_jj⁻¹ and, going down, X_ij = −L_ii⁻¹ · L[i, j:i] · X[j:i, j];
 * n³/6 multiply-adds in GEMMs. `diagInvT[b]` = L_bb⁻ᵀ for each diagonal block of width nb.
 */
export async function blockedLowerInverse(gemm: Gemm, L: Float64Array, n: number, diagInvT: Float64Array[], nb = 256): Promise<Float64Array> {
  const X = new Float64Array(n * n);
  for (let j = 0; j < n; j += nb) {
    const jb = Math.min(nb, n - j);
    // Block column j of X below the diagonal, rows j…n, contiguous (n − j)×jb.
    const col = new Float64Array((n - j) * jb);
    const Yjj = diagInvT[j / nb]!;
    for (let r = 0; r < jb; r++) for (let c = 0; c <= r; c++) col[r * jb + c] = Yjj[c * jb + r]!;
    for (let i = j + jb; i < n; i += nb) {
      const ib = Math.min(nb, n - i);
      const S = await gemm.product(block(L, n, i, i + ib, j, i), col.subarray(0, (i - j) * jb), ib, i - j, jb);
      col.set(await gemm.product(diagInvT[i / nb]!, S, ib, ib, jb, { transA: true, alpha: -1 }), (i - j) * jb);
    }
    putBlock(X, n, j, j, col, n - j, jb);
  }
  return X;
}

/**
 * The same U as linalg.choleskyInverseUpper (upper triangular, H̃⁻¹ = UᵀU with H̃ = dampen(H), via
 * the order reversal J: J H̃ J = M Mᵀ, U = J M⁻¹ J) and the λ that dampen added, with the O(n³)
 * work (n³/3 multiply-adds) in GEMMs: for n = 3072 about 1 CPU-second, some ten times less than
 * the unblocked JavaScript version.
 */
export async function choleskyInverseUpperBlocked(
  gemm: Gemm,
  H: Float64Array,
  n: number,
  damp: number,
  opts: { overwrite?: boolean } = {},
): Promise<{ U: Float64Array; lambda: number }> {
  // `overwrite`: H is the caller's scratch copy, dampened and reversed in place (no n×n copy).
  const { H: rev, lambda } = dampen(H, n, damp, opts.overwrite === true);
  // J·H̃·J of a row-major n×n matrix is its flat array reversed: (i, j) ↔ (n−1−i, n−1−j).
  rev.reverse();
  const { L: M, diagInvT } = await blockedCholesky(gemm, rev, n);
  const U = await blockedLowerInverse(gemm, M, n, diagInvT);
  U.reverse(); // U = J·M⁻¹·J
  return { U, lambda };
}
