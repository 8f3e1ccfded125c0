/**
 * Whole-block removal (layer dropping): Sajjad, Dalvi, Durrani & Nakov 2023, "On the Effect of
 * Dropping Layers of Pre-trained Transformer Models" (top-layer dropping, their best strategy), as
 * studied for bias by Proskurina, Metzler & Velcin 2023 ("The Other Side of Compression"): remove
 * the top `remove` blocks, or the blocks listed in `indices`.
 *
 * Unlike the other pruning methods this changes the architecture, physically: the removed blocks'
 * parameters are deleted, the remaining blocks are renumbered 0…L′−1 in order (so a Hugging Face
 * loader finds `…layer.0…` to `…layer.{L′−1}…`), and config.json gets the new
 * num_hidden_layers / n_layer (ctx.configEdits). The output model is smaller and is the dense model
 * with those blocks skipped: the residual stream (GPT-2, Llama) or the hidden state (BERT) flows
 * from the block below straight into the block above, and the final norm and head are kept.
 *
 * The step's scope is not used: the options name whole blocks.
 */
import { DikeError } from '../../errors.js';
import type { LinearInfo } from '../../model/arch/types.js';
import type { Param } from '../../model/checkpoint.js';
import { fromFloat32, toFloat32 } from '../../model/safetensors.js';
import { OptionReader } from '../options.js';
import type { Method, MatrixReport } from '../types.js';

export interface LayersOptions {
  /** Remove this many blocks from the top. */
  remove?: number;
  /** Remove exactly these block indices. */
  indices?: number[];
}

const LAYER_COUNT_KEYS = ['num_hidden_layers', 'n_layer'];

/**
 * The common prefix of block parameter names, e.g. "bert.encoder.layer.", "transformer.h.",
 * "model.layers.": read off the linear maps, whose names hold their block index after it.
 */
export function blockPrefix(all: readonly LinearInfo[]): string {
  let prefix: string | undefined;
  for (const l of all) {
    if (l.layer < 0) continue;
    const m = new RegExp(`^(.*?\\.)${l.layer}\\.`).exec(l.weight);
    const p = m?.[1];
    if (p === undefined || (prefix !== undefined && p !== prefix)) {
      throw new DikeError('recipe', 'layers', `cannot find the block prefix in "${l.weight}" (block ${l.layer}${prefix !== undefined ? `, expected ${prefix}${l.layer}.` : ''})`);
    }
    prefix = p;
  }
  if (prefix === undefined) throw new DikeError('recipe', 'layers', 'the model lists no transformer blocks');
  return prefix;
}

/** Whether float32 values survive a round trip through the parameter's on-disk dtype unchanged. */
function survives(data: Float32Array, dtype: Param['dtype']): boolean {
  if (dtype !== 'F16' && dtype !== 'BF16') return true;
  const back = toFloat32(fromFloat32(data, [data.length], dtype));
  for (let i = 0; i < data.length; i++) if (!Object.is(back[i], data[i])) return false;
  return true;
}

function parseIndices(v: unknown, where: string): number[] {
  const list = typeof v === 'string' ? v.split(',').map((s) => (s.trim() === '' ? NaN : Number(s))) : typeof v === 'number' ? [v] : v;
  if (!Array.isArray(list) || list.length === 0 || list.some((n) => !Number.isInteger(n) || (n as number) < 0)) {
    throw new DikeError('recipe', `${where} "indices"`, `expected a non-empty list of block indices, found ${JSON.stringify(v)}`);
  }
  const sorted = [...new Set(list as number[])].sort((a, b) => a - b);
  if (sorted.length !== list.length) throw new DikeError('recipe', `${where} "indices"`, `repeated block index in ${JSON.stringify(v)}`);
  return sorted;
}

export const layers: Method<LayersOptions> = {
  name: 'layers',
  description: 'remove whole transformer blocks (top k, or given indices); the output model has fewer layers',
  reference: 'Sajjad, Dalvi, Durrani & Nakov 2023, "On the Effect of Dropping Layers of Pre-trained Transformer Models" (top-layer dropping); Proskurina, Metzler & Velcin 2023',
  needsCalibration: false,
  parseOptions(raw, where) {
    const { indices, ...rest } = raw;
    const r = new OptionReader(rest, 'recipe', where);
    const hasRemove = rest['remove'] !== undefined;
    if (hasRemove === (indices !== undefined)) throw new DikeError('recipe', `${where} "remove"`, 'give exactly one of remove (blocks from the top) or indices');
    const o: LayersOptions = hasRemove ? { remove: r.int('remove', undefined, [1, Number.MAX_SAFE_INTEGER]) } : { indices: parseIndices(indices, where) };
    r.done();
    return o;
  },
  async apply(ctx, opts) {
    const L = ctx.shape.numLayers;
    const raw = ctx.model.rawConfig;
    const where = opts.remove !== undefined ? 'layers "remove"' : 'layers "indices"';
    const count = opts.remove ?? opts.indices!.length;
    if (count >= L) throw new DikeError('recipe', where, `removing ${count} of ${L} blocks leaves none`);
    const removed = opts.remove !== undefined ? Array.from({ length: count }, (_, i) => L - count + i) : opts.indices!;
    for (const l of removed) if (l >= L) throw new DikeError('recipe', where, `block ${l} does not exist (the model has blocks 0…${L - 1})`);
    const keys = LAYER_COUNT_KEYS.filter((k) => raw[k] !== undefined);
    if (keys.length === 0) throw new DikeError(ctx.model.configFile, `"${LAYER_COUNT_KEYS.join('" / "')}"`, 'layers: the config names no layer count to edit');
    if (keys.some((k) => k in ctx.configEdits)) throw new DikeError('recipe', 'layers', 'blocks are removed once per step (overrides do not apply to this method)');

    const kept = Array.from({ length: L }, (_, l) => l).filter((l) => !removed.includes(l));
    const newIndex = new Map(kept.map((l, j) => [l, j]));
    // GPT-2 can scale block l's attention by 1/(l + 1): renumbering would change the kept blocks.
    if (raw['scale_attn_by_inverse_layer_idx'] === true && kept.some((l) => newIndex.get(l) !== l)) {
      throw new DikeError(ctx.model.configFile, '"scale_attn_by_inverse_layer_idx"', 'with this set, renumbering blocks changes their attention scaling: only the top blocks can be removed');
    }

    const prefix = blockPrefix(ctx.allLinears);
    const pattern = new RegExp(`^${prefix.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(\\d+)\\.(.*)$`);
    const rename = (name: string): string | null | undefined => {
      const m = pattern.exec(name);
      if (m === null) return undefined; // not a block parameter
      const j = newIndex.get(Number(m[1]));
      return j === undefined ? null : `${prefix}${j}.${m[2]}`;
    };

    const removedCount = new Map(removed.map((l) => [l, 0]));
    const entries = [...ctx.params];
    ctx.params.clear();
    for (const [name, p] of entries) {
      const to = rename(name);
      if (to === null) {
        const l = Number(pattern.exec(name)![1]);
        removedCount.set(l, removedCount.get(l)! + p.data.length);
        continue;
      }
      const target = to ?? name;
      if (ctx.params.has(target)) throw new DikeError('recipe', 'layers', `renaming ${name} → ${target} collides with another parameter`);
      // A moved matrix that an earlier step rewrote keeps its exact values (written as F32 if need be).
      ctx.params.set(target, target !== name && !survives(p.data, p.dtype) ? { ...p, dtype: 'F32' } : p);
    }
    const quantized = [...ctx.quantized];
    ctx.quantized.clear();
    for (const [name, q] of quantized) {
      const to = rename(name);
      if (to !== null) ctx.quantized.set(to ?? name, q);
    }
    for (const k of keys) ctx.configEdits[k] = kept.length;
    const layerTypes = raw['layer_types'];
    if (Array.isArray(layerTypes) && layerTypes.length === L) ctx.configEdits['layer_types'] = kept.map((l) => layerTypes[l]);

    // One record per removed block (named by its parameter prefix, not a matrix).
    return removed.map((l): MatrixReport => ({ weight: `${prefix}${l}`, method: 'layers', detail: { removed_block: l, parameters: removedCount.get(l)!, layers_after: kept.length } }));
  },
};
