/**
 * The largest x in (0, hi] whose cost stays within a budget, for a cost that grows with x (f(0) = 0
 * by assumption: x = 0 is the baseline the budget is measured against). Geometric bisection, since
 * the knobs it serves (Fair-GPTQ's α) span orders of magnitude:
 *   f(hi) ≤ budget            → hi
 *   f(lo) > budget, lo = hi·ratio → 0 (nothing but the baseline fits)
 *   else `steps` times: m = √(lo·hi); f(m) ≤ budget ? lo = m : hi = m;  → lo
 * so the answer is within a factor (1/ratio)^(2^−steps) of the true threshold and always satisfies
 * the budget where it was measured. Every evaluation is returned, in order, for the record.
 */
export interface BisectionStep {
  x: number;
  value: number;
  within: boolean;
}

export async function largestWithinBudget(
  f: (x: number) => Promise<number>,
  budget: number,
  hi: number,
  opts: { steps: number; ratio?: number },
): Promise<{ x: number; trace: BisectionStep[] }> {
  const trace: BisectionStep[] = [];
  const probe = async (x: number): Promise<boolean> => {
    const value = await f(x);
    const within = value <= budget;
    trace.push({ x, value, within });
    return within;
  };
  if (await probe(hi)) return { x: hi, trace };
  let lo = hi * (opts.ratio ?? 1e-3);
  if (!(await probe(lo))) return { x: 0, trace };
  for (let i = 0; i < opts.steps; i++) {
    const m = Math.sqrt(lo * hi);
    if (await probe(m)) lo = m;
    else hi = m;
  }
  return { x: lo, trace };
}
