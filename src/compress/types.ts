/**
 * Compression as a list of methods applied in order (a recipe), in the style of llm-compressor's
 * modifiers. A method is one declarative unit: name, options, whether it needs calibration
 * activations, and one function that rewrites weight matrices and reports what it did.
 */
import type { LinearInfo } from '../model/arch/types.js';
import type { Checkpoint, Param } from '../model/checkpoint.js';
import type { CalibrationSet, CalibrationVisit, InputStats, WalkOptions } from './calibration-types.js';

export type { InputStats } from './calibration-types.js';
import type { QuantState } from '../model/quant.js';


/** What a method did to one matrix; recorded in compression.json. */
export interface MatrixReport {
  weight: string;
  method: string;
  /** Fraction of exact zeros in the matrix after the step. */
  sparsity?: number;
  bits?: number;
  groupSize?: number;
  symmetric?: boolean;
  /** Method-specific numbers (pattern, reconstruction error ‖WX − ŴX‖², …). */
  detail?: Record<string, number | string | boolean>;
}

export type { QuantState } from '../model/quant.js';

export interface CompressContext {
  /** The model's parameters (float32), modified in place by methods. */
  params: Map<string, Param>;
  /** The linear maps this step may touch, in forward order. */
  targets: LinearInfo[];
  /** All linear maps of the model (for methods that act on whole modules, e.g. heads). */
  allLinears: LinearInfo[];
  /** Architecture facts (layers, heads, head dim). */
  shape: { numLayers: number; numHeads: number; numKvHeads: number; headDim: number; hiddenSize: number };
  /** Input statistics of the targets on the calibration set, computed on the current weights. */
  calibration(): Promise<Map<string, InputStats>>;
  /**
   * The targets with their input statistics, one-shot or sequentially (compress/calibrate.ts
   * walkCalibration); `set` replaces the recipe's calibration set (e.g. a method's own sentence pairs).
   */
  walk(opts: WalkOptions & { set?: CalibrationSet }, visit: CalibrationVisit): Promise<void>;
  /** Sentence pairs by name (the caller of applyRecipe provides them; see PairSource). */
  pairs(spec: PairRequest, where: string): SentencePair[];
  /** The first `lines` lines of the held-out quality text (the audit's quality proxy; see HeldOutSource). */
  heldOut?(lines: number, where: string): string[];
  /**
   * The model as it stands before this step (config, shape, task, tokenizer), with `params` = the
   * working parameters above: what a method needs to run the model itself (e.g. ablation losses).
   */
  model: Checkpoint;
  /** The recipe's calibration token sequences, sampled once (throws if the recipe names no text). */
  calibrationSet(): CalibrationSet;
  /** Intra-op threads for ONNX Runtime sessions a method creates (undefined: ORT's default). */
  threads?: number;
  /**
   * Keys a method sets here are merged into config.json after the step (e.g. num_hidden_layers
   * after removing blocks); the next steps see the edited architecture. Methods that change the
   * architecture may also delete and rename entries of `params`.
   */
  configEdits: Record<string, unknown>;
  seed: number;
  /** Integer forms of quantized matrices, by weight name (quantization methods fill it). */
  quantized: Map<string, QuantState>;
}

/** Two sentences that differ only in the social group mentioned (Fair-GPTQ's calibration). */
export interface SentencePair {
  /** The stereotypical (more biased) sentence and its counterpart. */
  stereotype: string;
  antiStereotype: string;
  /** Stable id and group, for the record. */
  id?: string;
  group?: string;
}

export interface PairRequest {
  /** A source name (stereoset, crows-pairs) or a file. */
  source: string;
  /** At most this many pairs, in file order. */
  limit?: number;
  /** Seed of a seeded source (shuffled:<source>, counterfactual's choice of counterpart). */
  seed?: number;
  /** Group axes for generated pairs (counterfactual), e.g. ["gender", "religion"]. */
  axes?: string[];
  /** The recipe's calibration text file (filled in by applyRecipe): counterfactual's source text. */
  textFile?: string;
}

/**
 * Where sentence pairs come from. The compress layer does not read benchmark data itself (it sits
 * below measure/): the caller passes a PairSource (the CLI and audit pass measure/pairs.ts).
 */
export type PairSource = (req: PairRequest) => SentencePair[];

/** The held-out text of the quality proxy (lines, from the start), given by the caller like PairSource. */
export type HeldOutSource = (lines: number) => string[];

/** Raw options of one recipe step, as written in YAML/JSON or on the command line. */
export type RawOptions = Record<string, unknown>;

export interface Method<O> {
  name: string;
  description: string;
  /** Paper and equation implemented. */
  reference: string;
  needsCalibration: boolean;
  /** Validate options; `where` names the recipe step for error messages. */
  parseOptions(raw: RawOptions, where: string): O;
  apply(ctx: CompressContext, opts: O): Promise<MatrixReport[]>;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyMethod = Method<any>;

/** A matrix as the math sees it: rows = output channels, columns = input dimensions. */
export interface OutIn {
  rows: number;
  cols: number;
  data: Float32Array;
}

/** Copy a stored weight into [out, in] orientation (GPT-2's Conv1D is stored [in, out]). */
export function toOutIn(p: Param, info: LinearInfo): OutIn {
  const rows = info.outDim;
  const cols = info.inDim;
  if (info.layout === 'out-in') return { rows, cols, data: p.data.slice() };
  const data = new Float32Array(rows * cols);
  for (let i = 0; i < cols; i++) for (let o = 0; o < rows; o++) data[o * cols + i] = p.data[i * rows + o]!;
  return { rows, cols, data };
}

/** Write an [out, in] matrix back into the parameter's storage layout. */
export function fromOutIn(m: OutIn, p: Param, info: LinearInfo): void {
  if (info.layout === 'out-in') {
    p.data.set(m.data);
    return;
  }
  for (let i = 0; i < m.cols; i++) for (let o = 0; o < m.rows; o++) p.data[i * m.rows + o] = m.data[o * m.cols + i]!;
}

export function zeroFraction(data: Float32Array): number {
  let z = 0;
  for (let i = 0; i < data.length; i++) if (data[i] === 0) z++;
  return data.length === 0 ? 0 : z / data.length;
}
