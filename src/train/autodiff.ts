/**
 * Reverse-mode differentiation of a Dikē graph: appends to the graph the nodes that compute
 * d loss / d w for each requested value w, walking the forward nodes in reverse order and applying
 * the rule of each operator (grad-rules.ts). Gradients reaching a value along several paths are
 * summed (tied embeddings: the input lookup and the output projection).
 */
import { GraphBuilder, type WeightSource } from '../model/graph/build.js';
import type { Graph, Node } from '../model/graph/ir.js';
import { GRAD_RULES, zerosLike, type GradContext } from './grad-rules.js';
import type { ShapeMap } from './shapes.js';

const NO_WEIGHTS: WeightSource = { file: '(training graph)', get: () => undefined };

/**
 * Differentiate scalar `loss` with respect to `wrt` (float values: inputs or initializers).
 * Returns the name of each gradient value (a zero tensor when `loss` does not depend on it).
 */
export function differentiate(g: Graph, facts: ShapeMap, loss: string, wrt: readonly string[]): Map<string, string> {
  const b = new GraphBuilder(g.name, NO_WEIGHTS, g);
  const forward = [...g.nodes];
  // Values that depend on some wrt value (only those carry gradients).
  const live = new Set(wrt);
  for (const n of forward) if (n.inputs.some((i) => live.has(i))) for (const o of n.outputs) live.add(o);
  if (!live.has(loss)) throw new Error(`the loss ${loss} does not depend on any trained value`);

  const pending = new Map<string, string[]>();
  const add = (name: string, grad: string): void => {
    const list = pending.get(name);
    if (list === undefined) pending.set(name, [grad]);
    else list.push(grad);
  };
  const ctx: GradContext = { b, facts };
  const producer = new Map<string, Node>();
  const total = (name: string): string | undefined => {
    const list = pending.get(name);
    if (list === undefined) return undefined;
    if (list.length > 1) {
      // A scatter-add into zeros (an embedding lookup's gradient) can scatter into the sum of the other
      // contributions instead (tied embeddings: the output projection's dense gradient), which saves
      // a zero fill and a full pass over the vocabulary matrix.
      for (const n of g.nodes.slice(forward.length)) for (const o of n.outputs) producer.set(o, n);
      const k = list.findIndex((v) => {
        const n = producer.get(v);
        return n?.op === 'ScatterND' && n.attrs['reduction'] === 'add' && producer.get(n.inputs[0]!)?.op === 'ConstantOfShape';
      });
      let s: string;
      if (k >= 0) {
        const rest = list.filter((_, i) => i !== k);
        const scatter = producer.get(list[k]!)!;
        scatter.inputs[0] = rest.length === 1 ? rest[0]! : b.node('Sum', rest)[0]!;
        // The scatter now reads values that may have been emitted after it (a Sum just made, or another
        // lookup's gradient): move it to the end, where all its inputs exist. Nothing reads its output
        // yet (a pending gradient is consumed only through total()).
        g.nodes.splice(g.nodes.indexOf(scatter), 1);
        g.nodes.push(scatter);
        s = list[k]!;
      } else {
        s = b.node('Sum', list)[0]!;
      }
      pending.set(name, [s]);
      return s;
    }
    return list[0];
  };

  return b.scoped('grad', () => {
    add(loss, b.constant('float32', facts.get(loss)!.shape, new Array(facts.get(loss)!.shape.reduce((p, q) => p * q, 1)).fill(1), 'dloss'));
    for (let i = forward.length - 1; i >= 0; i--) {
      const n = forward[i]!;
      if (!n.outputs.some((o) => live.has(o) && pending.has(o))) continue;
      const rule = GRAD_RULES[n.op];
      if (rule === undefined) throw new Error(`no gradient rule for operator ${n.op} (node ${n.scope ?? ''})`);
      const gy = n.outputs.map(total);
      const gx = b.scoped(n.scope ?? n.op, () => rule(ctx, n, gy));
      n.inputs.forEach((x, k) => {
        const gk = gx[k];
        if (gk !== undefined && live.has(x)) add(x, gk);
      });
    }
    const out = new Map<string, string>();
    for (const w of wrt) out.set(w, total(w) ?? zerosLike(ctx, facts.get(w)!.shape));
    return out;
  });
}
