/** Flags that several commands share, declared once (see flags.ts). */
import type { FlagSpec } from './flags.js';

export const THREADS_FLAG: FlagSpec = { type: 'int', min: 1, max: 1024, help: 'ONNX Runtime intra-op threads (default: its own choice)' };
export const EXECUTION_FLAG: FlagSpec = {
  type: 'enum',
  choices: ['simulated', 'deployed'],
  default: 'simulated',
  help: 'quantized models: float weights (simulated) or integer kernels (deployed)',
};
export const SEED_FLAG: FlagSpec = { type: 'int', min: 0, max: 4294967295, help: 'seed of every random choice' };
export const LIMIT_FLAG: FlagSpec = { type: 'int', min: 1, help: 'use only the first N items of each benchmark' };
export const RESAMPLES_FLAG: FlagSpec = { type: 'int', min: 1000, max: 1_000_000, help: 'bootstrap resamples for 95% intervals' };
export const DATA_FLAG: FlagSpec = { type: 'string', value: '<dir>', help: 'benchmark data directory (default: $DIKE_DATA, else the embedded CrowS-Pairs, StereoSet and lm_corpus excerpt)' };
/** The shipped testbeds (models/testbeds/), named in the help of every command that takes a model. */
export const MODEL_POSITIONAL_HELP = 'a Hugging Face model directory, dike-bert-mini / dike-gpt2-mini, or testbed:<name> (models/testbeds/<name>.json: bert, gpt2 (RTN adds bias), bert-gptq, gpt2-gptq (GPTQ-3), bert-prune (magnitude and Wanda 50%); built on first use)';
export const DENSE_MODEL_FLAG: FlagSpec = { type: 'string', value: '<dir|dike-bert-mini|dike-gpt2-mini|testbed:<name>>', help: 'the dense model (default dike-bert-mini; testbed:… is built on first use)' };
export const SCORER_FLAG: FlagSpec = { type: 'string', value: '<name>', help: 'how items are scored (see dike measure --help)' };
export const ALPHA_FLAG: FlagSpec = { type: 'number', min: 0, max: 1, exclusiveMin: true, exclusiveMax: true, default: 0.05, help: 'significance level (Holm–Bonferroni)' };
export const CALIBRATION_TEXT_FLAG: FlagSpec = {
  type: 'string',
  value: 'text',
  help: 'calibration text for calibrated methods (default <data>/lm_corpus/train.txt, else the shipped excerpt)',
};
export const QUALITY_LINES_FLAG: FlagSpec = {
  type: 'int',
  min: 0,
  default: 50,
  help: 'held-out lines of lm_corpus/valid.txt (<data>, else the shipped excerpt) for the quality proxy (0: skip)',
};
/** Calibration size of variants compressed inside `audit` and `locate` (smaller than `compress`'s 128 × 128). */
export const VARIANT_CALIBRATION = { samples: 32, seqLen: 64 } as const;
