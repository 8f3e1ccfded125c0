/**
 * Units of a model that `dike locate` attributes bias changes to, and the recipes that compress one
 * unit only (leave-one-in) or everything but one unit (leave-one-out).
 *
 *   layer-module  each block × {attention, ffn}: the linear maps of that module in that block
 *   matrix        each linear map
 *
 * Only units the variant's recipe compresses are listed. Narrowing keeps every step's method,
 * options, overrides and the recipe's seed and calibration; a step that selects nothing of the unit
 * (leave-one-in) or only the unit (leave-one-out) is dropped.
 */
import { DikeError } from '../errors.js';
import type { LinearInfo } from '../model/arch/types.js';
import { selectTargets, type Recipe, type RecipeStep, type Scope } from '../compress/recipe.js';

export type UnitKind = 'layer-module' | 'matrix' | 'head';
export const UNIT_KINDS: readonly UnitKind[] = ['layer-module', 'matrix', 'head'];

export interface Unit {
  /** "L1.ffn", "L1.ffn.output.dense" style label; unique within a run. */
  label: string;
  layer: number;
  module: 'attention' | 'ffn';
  /** The weight name, for matrix units. */
  matrix?: string;
  /** The head index, for head units. */
  head?: number;
  /** The key/value group, for the K/V units of grouped-query attention. */
  kvGroup?: number;
  /** The weight matrices the unit covers that the variant compresses. */
  weights: string[];
  /** Head units: the flat indices (storage order) of each weight's entries that belong to the head. */
  entries?: Map<string, Int32Array>;
}

type HeadShape = { numHeads: number; numKvHeads: number; headDim: number; hiddenSize: number };

/**
 * The entries (flat indices in storage order) of one head's slice of each attention matrix of a block.
 *
 *   which = {head: h}   query head h: its output rows of Q and its input columns of the output
 *                       projection, and — when every head has its own keys and values (numKvHeads =
 *                       numHeads) — its rows of K and V too
 *   which = {kv: g}     grouped-query attention only: key/value group g's rows of K and V, which the
 *                       numHeads / numKvHeads query heads of the group share
 *
 * So with grouped-query attention the head and KV-group units of a block partition its attention
 * matrices, as the heads alone do otherwise. A fused Q/K/V matrix (GPT-2's c_attn) holds Q at output
 * offset 0, K at numHeads·d, V at numHeads·d + numKvHeads·d.
 */
export function headEntries(attention: readonly LinearInfo[], which: { head: number } | { kv: number }, shape: HeadShape): Map<string, Int32Array> {
  const d = shape.headDim;
  const H = shape.numHeads;
  const KV = shape.numKvHeads;
  if (KV < 1 || H % KV !== 0) throw new DikeError('', '--unit head', `${H} heads cannot be split into ${KV} key/value groups`);
  if ('kv' in which && KV === H) throw new Error('key/value group units exist only with grouped-query attention');
  const gqa = KV < H;
  // Output-row ranges of the Q/K/V part of a matrix that belong to the unit.
  const qRows = 'head' in which ? [which.head * d] : [];
  const kvRows = 'kv' in which ? [which.kv * d] : gqa ? [] : [which.head * d];
  const out = new Map<string, Int32Array>();
  for (const l of attention) {
    const at = (o: number, i: number): number => (l.layout === 'out-in' ? o * l.inDim + i : i * l.outDim + o);
    let starts: number[];
    if (l.role === 'o') starts = [];
    else if (l.role === 'q') starts = qRows;
    else if (l.role === 'k' || l.role === 'v') starts = kvRows;
    else if (l.role === 'qkv') starts = [...qRows, ...kvRows.flatMap((r) => [H * d + r, H * d + KV * d + r])];
    else throw new DikeError('', '--unit head', `attention matrix ${l.weight} has role "${l.role}", which head units do not split`);
    const idx: number[] = [];
    if (l.role === 'o') {
      if ('head' in which) for (let o = 0; o < l.outDim; o++) for (let i = which.head * d; i < (which.head + 1) * d; i++) idx.push(at(o, i));
    } else {
      for (const s0 of starts) for (let o = s0; o < s0 + d; o++) for (let i = 0; i < l.inDim; i++) idx.push(at(o, i));
    }
    if (idx.length > 0) out.set(l.weight, Int32Array.from(idx).sort());
  }
  return out;
}

/** The weights a recipe's steps select (union), in forward order. */
export function recipeTargets(linears: readonly LinearInfo[], recipe: Recipe): LinearInfo[] {
  const hit = new Set(recipe.steps.flatMap((s) => selectTargets(linears, s.scope).map((t) => t.weight)));
  return linears.filter((l) => hit.has(l.weight));
}

/** The units a recipe compresses, in forward order (layer, then attention before ffn). */
export function unitsOf(linears: readonly LinearInfo[], recipe: Recipe | undefined, kind: UnitKind, shape?: HeadShape): Unit[] {
  // No recipe (--variant none): every attention matrix, for head removal.
  const targets = (recipe === undefined ? linears.filter((l) => l.module === 'attention') : recipeTargets(linears, recipe)).filter((t) => t.layer >= 0 && (t.module === 'attention' || t.module === 'ffn'));
  if (kind === 'head') {
    if (shape === undefined) throw new Error('head units need the model shape');
    const layers = [...new Set(targets.filter((t) => t.module === 'attention').map((t) => t.layer))].sort((a, b) => a - b);
    return layers.flatMap((layer) => {
      const attention = targets.filter((t) => t.layer === layer && t.module === 'attention');
      const unit = (label: string, entries: Map<string, Int32Array>, which: { head: number } | { kvGroup: number }): Unit => ({ label, layer, module: 'attention', ...which, weights: [...entries.keys()], entries });
      const heads = Array.from({ length: shape.numHeads }, (_, h) => unit(`L${layer}.head${h}`, headEntries(attention, { head: h }, shape), { head: h }));
      const groups = shape.numKvHeads < shape.numHeads ? Array.from({ length: shape.numKvHeads }, (_, g) => unit(`L${layer}.kv${g}`, headEntries(attention, { kv: g }, shape), { kvGroup: g })) : [];
      return [...heads, ...groups];
    });
  }
  const short = (w: string, layer: number): string => {
    // "bert.encoder.layer.1.attention.self.query.weight" → "attention.self.query"
    const m = new RegExp(`\\.${layer}\\.(.*?)(\\.weight)?$`).exec(w);
    return m ? m[1]! : w;
  };
  if (kind === 'matrix') {
    return targets.map((t) => ({ label: `L${t.layer}.${short(t.weight, t.layer)}`, layer: t.layer, module: t.module as Unit['module'], matrix: t.weight, weights: [t.weight] }));
  }
  const units = new Map<string, Unit>();
  for (const t of targets) {
    const label = `L${t.layer}.${t.module}`;
    const u = units.get(label) ?? { label, layer: t.layer, module: t.module as Unit['module'], weights: [] };
    u.weights.push(t.weight);
    units.set(label, u);
  }
  return [...units.values()].sort((a, b) => a.layer - b.layer || (a.module === b.module ? 0 : a.module === 'attention' ? -1 : 1));
}

function withScope(step: RecipeStep, scope: Scope): RecipeStep {
  return { ...step, scope };
}

/**
 * Leave-one-in: every step of the recipe with its scope narrowed to the unit, i.e. for a layer-module
 * unit `scope: {modules: [m], layers: [l]}` (the step's include/exclude patterns kept), for a matrix
 * unit also `include: [weight]`. Undefined when no step touches the unit.
 */
export function leaveOneIn(linears: readonly LinearInfo[], recipe: Recipe, unit: Unit): Recipe | undefined {
  const steps: RecipeStep[] = [];
  for (const s of recipe.steps) {
    if (!selectTargets(linears, s.scope).some((t) => unit.weights.includes(t.weight))) continue;
    const scope: Scope = { modules: [unit.module], layers: [unit.layer] };
    if (unit.matrix !== undefined) scope.include = [unit.matrix];
    else if (s.scope.include !== undefined) scope.include = [...s.scope.include];
    if (s.scope.exclude !== undefined) scope.exclude = [...s.scope.exclude];
    steps.push(withScope(s, scope));
  }
  return steps.length === 0 ? undefined : { ...recipe, steps };
}

/**
 * Leave-one-out: every step with the unit's weights added to its exclude patterns (exact names).
 * Undefined when nothing else is compressed (the result is the dense model).
 */
export function leaveOneOut(linears: readonly LinearInfo[], recipe: Recipe, unit: Unit): Recipe | undefined {
  const steps: RecipeStep[] = [];
  for (const s of recipe.steps) {
    const scope: Scope = { ...s.scope, exclude: [...(s.scope.exclude ?? []), ...unit.weights] };
    if (selectTargets(linears, scope).length > 0) steps.push(withScope(s, scope));
  }
  return steps.length === 0 ? undefined : { ...recipe, steps };
}
