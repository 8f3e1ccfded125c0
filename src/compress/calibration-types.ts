/**
 * The data that calibration produces and methods consume: plain types shared by calibrate.ts (which
 * makes them) and types.ts (the method interface that receives them), so neither imports the other.
 */

/** The most calibration sequences a recipe or flag may ask for: more is refused, never allocated. */
export const MAX_CALIBRATION_SAMPLES = 65536;
/** The longest calibration sequence, in tokens (a model's positions bound it further). */
export const MAX_CALIBRATION_SEQ_LEN = 8192;

export interface CalibrationSpec {
  /** Text file, one passage per line. */
  file: string;
  samples: number;
  seqLen: number;
  seed: number;
}

export interface CalibrationSet {
  sequences: number[][];
  /** SHA-256 of the token ids (recorded in compression.json). */
  hash: string;
  spec: CalibrationSpec;
}

/** Second-moment statistics of a linear map's input over calibration tokens. */
export interface InputStats {
  /** Σ x xᵀ over calibration tokens, [in, in] row-major, float64. */
  gram: Float64Array;
  /** Number of tokens summed. */
  tokens: number;
  dim: number;
}
