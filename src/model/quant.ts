/** The integer form of quantized weights, shared by compression (which writes it) and the runtime (which deploys it). */

/**
 * The integer form of a quantized matrix, in [out, in] orientation: w ≈ scale·(code − zero), with
 * one scale and zero per output row and group of `groupSize` input columns (groupSize = in for
 * per-channel). Recorded so that deployed execution can run ONNX Runtime's real integer kernels.
 */
export interface QuantState {
  bits: number;
  groupSize: number;
  symmetric: boolean;
  rows: number;
  cols: number;
  /** Codes in [0, 2^bits), [rows, cols]. */
  codes: Uint8Array;
  /** [rows, ceil(cols / groupSize)] */
  scales: Float32Array;
  /** Zero points in code units, [rows, ceil(cols / groupSize)] (2^(bits−1) when symmetric). */
  zeros: Uint8Array;
  /**
   * The matrix also quantizes its input at run time: per tensor, to uint8, as ONNX
   * DynamicQuantizeLinear (dynamic int8, e.g. `dynamic-int8`). Simulated execution then fake-quantizes
   * the activations; deployed execution runs DynamicQuantizeMatMul. Absent: weight-only.
   */
  dynamicActivations?: boolean;
}
