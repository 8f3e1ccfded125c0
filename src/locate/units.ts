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
  /** The weight matrices the unit covers that the variant compresses. */
  weights: string[];
  /** Head units: the flat indices (storage order) of each weight's entries that belong to the head. */
  entries?: Map<string, Int32Array>;
}

/**
 * The entries of attention head h in each attention matrix of a block: its output rows of Q, K, V
 * (GPT-2's fused c_attn: the rows at offsets 0, H, 2H) and its input columns of the output projection.
 * Grouped-query attention (fewer K/V heads than heads) is refused: a K/V row belongs to several heads.
 */
export function headEntries(attention: readonly LinearInfo[], h: number, shape: { numHeads: number; numKvHeads: number; headDim: number; hiddenSize: number }): Map<string, Int32Array> {
  if (shape.numKvHeads !== shape.numHeads) throw new DikeError('', '--unit head', `head units need as many key/value heads as heads (the model has ${shape.numKvHeads} and ${shape.numHeads})`);
  const d = shape.headDim;
  const out = new Map<string, Int32Array>();
  for (const l of attention) {
    const at = (o: number, i: number): number => (l.layout === 'out-in' ? o * l.inDim + i : i * l.outDim + o);
    const idx: number[] = [];
    if (l.role === 'o') {
      for (let o = 0; o < l.outDim; o++) for (let i = h * d; i < (h + 1) * d; i++) idx.push(at(o, i));
    } else if (l.role === 'q' || l.role === 'k' || l.role === 'v' || l.role === 'qkv') {
      const offsets = l.role === 'qkv' ? [0, shape.hiddenSize, 2 * shape.hiddenSize] : [0];
      for (const off of offsets) for (let o = off + h * d; o < off + (h + 1) * d; o++) for (let i = 0; i < l.inDim; i++) idx.push(at(o, i));
    } else {
      throw new DikeError('', '--unit head', `attention matrix ${l.weight} has role "${l.role}", which head units do not split`);
    }
    out.set(l.weight, Int32Array.from(idx).sort());
  }
  return out;
}

/** The weights a recipe's steps select (union), in forward order. */
export function recipeTargets(linears: readonly LinearInfo[], recipe: Recipe): LinearInfo[] {
  const hit = new Set(recipe.steps.flatMap((s) => selectTargets(linears, s.scope).map((t) => t.weight)));
  return linears.filter((l) => hit.has(l.weight));
}

/** The units a recipe compresses, in forward order (layer, then attention before ffn). */
export function unitsOf(linears: readonly LinearInfo[], recipe: Recipe | undefined, kind: UnitKind, shape?: { numHeads: number; numKvHeads: number; headDim: number; hiddenSize: number }): Unit[] {
  // No recipe (--variant none): every attention matrix, for head removal.
  const targets = (recipe === undefined ? linears.filter((l) => l.module === 'attention') : recipeTargets(linears, recipe)).filter((t) => t.layer >= 0 && (t.module === 'attention' || t.module === 'ffn'));
  if (kind === 'head') {
    if (shape === undefined) throw new Error('head units need the model shape');
    const layers = [...new Set(targets.filter((t) => t.module === 'attention').map((t) => t.layer))].sort((a, b) => a - b);
    return layers.flatMap((layer) => {
      const attention = targets.filter((t) => t.layer === layer && t.module === 'attention');
      return Array.from({ length: shape.numHeads }, (_, h) => ({ label: `L${layer}.head${h}`, layer, module: 'attention' as const, head: h, weights: attention.map((t) => t.weight), entries: headEntries(attention, h, shape) }));
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
