/**
 * A model's size for comparing variants "at equal size" (the grid, the Pareto plot): the bytes of a
 * plain deployed form, counted from the parameter shapes and compression.json:
 *   every parameter                          16 bits per value (fp16)
 *   a quantized matrix (b bits, group g)     b bits per weight + 32 bits per group (fp16 scale and zero)
 *   a pruned matrix (sparsity s)             (1 − s) · (16 or b) bits per weight + 1 bit of mask
 * The dense model is counted at 16 bits too, so sizes compare like for like whatever the file's dtype.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { Checkpoint } from '../model/checkpoint.js';

interface MatrixRecord {
  weight: string;
  bits?: number;
  groupSize?: number;
  sparsity?: number;
}

export interface ModelSize {
  bytes: number;
  /** Average bits per parameter. */
  bitsPerParam: number;
}

export function modelSize(ckpt: Pick<Checkpoint, 'params' | 'dir'>): ModelSize {
  const per = new Map<string, { bits?: number; groupSize?: number; sparsity?: number }>();
  const file = path.join(ckpt.dir, 'compression.json');
  if (existsSync(file)) {
    const c = JSON.parse(readFileSync(file, 'utf8')) as { steps?: { matrices?: MatrixRecord[] }[] };
    for (const st of c.steps ?? []) {
      for (const m of st.matrices ?? []) {
        const prev = per.get(m.weight) ?? {};
        per.set(m.weight, {
          ...prev,
          ...(m.bits !== undefined ? { bits: m.bits, ...(m.groupSize !== undefined ? { groupSize: m.groupSize } : {}) } : {}),
          ...(m.sparsity !== undefined ? { sparsity: m.sparsity } : {}),
        });
      }
    }
  }
  let bits = 0;
  let count = 0;
  for (const [name, p] of ckpt.params) {
    const n = p.shape.reduce((a, b) => a * b, 1);
    count += n;
    const r = per.get(name);
    const inCols = p.shape[p.shape.length - 1] ?? n;
    const valueBits = r?.bits ?? 16;
    const groupBits = r?.bits !== undefined ? (32 * n) / Math.min(r.groupSize && r.groupSize > 0 ? r.groupSize : inCols, inCols) : 0;
    bits += r?.sparsity !== undefined && r.sparsity > 0 ? (1 - r.sparsity) * n * valueBits + n + groupBits : n * valueBits + groupBits;
  }
  return { bytes: bits / 8, bitsPerParam: count > 0 ? bits / count : 0 };
}
