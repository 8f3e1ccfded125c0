/** The one place compression methods are registered: a new method is one file plus one line here. */
import type { AnyMethod } from './types.js';
import { magnitude } from './methods/magnitude.js';
import { rtn } from './methods/rtn.js';
import { mixedPrecision } from './methods/mixed-precision.js';
import { gptq } from './methods/gptq.js';
import { fairGptq } from './methods/fair-gptq.js';
import { cwp } from './methods/cwp.js';
import { dynamicInt8 } from './methods/dynamic-int8.js';
import { sparsegpt } from './methods/sparsegpt.js';
import { wanda } from './methods/wanda.js';
import { fairSparsegpt } from './methods/fair-sparsegpt.js';
import { fairWanda } from './methods/fair-wanda.js';
import { nm } from './methods/nm.js';
import { heads } from './methods/heads.js';
import { fairHeads, fasp } from './methods/fair-heads.js';
import { neurons } from './methods/neurons.js';
import { layers } from './methods/layers.js';

export const METHODS: readonly AnyMethod[] = [
  magnitude,
  rtn,
  mixedPrecision,
  gptq,
  fairGptq,
  cwp,
  dynamicInt8,
  wanda,
  sparsegpt,
  fairWanda,
  fairSparsegpt,
  nm,
  heads,
  fairHeads,
  fasp,
  neurons,
  layers,
];

export function findMethod(name: string): AnyMethod | undefined {
  return METHODS.find((m) => m.name === name);
}
