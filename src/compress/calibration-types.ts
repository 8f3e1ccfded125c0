/**
 * The data that calibration produces and methods consume: plain types shared by calibrate.ts (which
 * makes them) and types.ts (the method interface that receives them), so neither imports the other.
 */

import type { LinearInfo } from '../model/arch/types.js';

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

/** Explicit token sequences (e.g. a JSON file of id lists). */
export interface TokenCalibrationSpec {
  /** Where the sequences came from (a file path or a description), for the record. */
  tokens: string;
}

/** How calibration sequences are batched and which positions enter the statistics. */
export interface CalibrationBatching {
  /** Sequences per forward batch (right-padded to the longest). */
  rows: number;
  /** Pad positions enter the statistics like any token (GPTQModel with padded batches); default dropped. */
  keepPads: boolean;
  /** Token id written at pad positions (it matters only with keepPads). */
  padId: number;
  /** Sequences 2i and 2i+1 are a pair (Fair-GPTQ's [stereotype; anti-stereotype]); batches hold whole pairs. */
  paired: boolean;
}

export const DEFAULT_BATCHING: CalibrationBatching = { rows: 16, keepPads: false, padId: 0, paired: false };

export interface CalibrationSet {
  sequences: number[][];
  /** SHA-256 of the token ids (recorded in compression.json). */
  hash: string;
  spec: CalibrationSpec | TokenCalibrationSpec;
  batching: CalibrationBatching;
}

export type CalibrationMode = 'sequential' | 'one-shot';

export const CALIBRATION_MODES: readonly CalibrationMode[] = ['sequential', 'one-shot'];

/** Options of a statistics pass. */
export interface StatsOptions {
  threads?: number;
  /** Also Σ (x₀ − x₁)(x₀ − x₁)ᵀ over the pairs of a paired calibration set (InputStats.pairGram). */
  pairs?: boolean;
  /**
   * Column block of the Gram capture's upper staircase (model/graph/capture.ts GRAM_BLOCK by
   * default); Infinity computes each full XᵀX (the tests compare the two).
   */
  gramBlock?: number;
}

export interface WalkOptions extends StatsOptions {
  mode: CalibrationMode;
  /**
   * In sequential mode: `group`, each sequential group of a block sees the earlier groups compressed
   * (GPTQ's true_sequential); `block`, every map of a block sees the block's input with the earlier
   * blocks compressed (SparseGPT's and Wanda's reference code).
   */
  granularity: 'group' | 'block';
}

/** Called with targets and their statistics; compresses them (in `params`) before returning. */

export type CalibrationVisit = (targets: LinearInfo[], stats: Map<string, InputStats>) => Promise<void>;
/** Second-moment statistics of a linear map's input over calibration tokens. */
export interface InputStats {
  /** Σ x xᵀ over calibration tokens, [in, in] row-major, float64. */
  gram: Float64Array;
  /** Number of tokens summed. */
  tokens: number;
  dim: number;
  /** Paired calibration only: Σ (x₀ − x₁)(x₀ − x₁)ᵀ over the pairs' aligned positions, [in, in]. */
  pairGram?: Float64Array;
  /** Number of pairs summed into pairGram, and the positions counted. */
  pairs?: number;
  pairTokens?: number;
}
