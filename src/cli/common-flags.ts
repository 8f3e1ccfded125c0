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
