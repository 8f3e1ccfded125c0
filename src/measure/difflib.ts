/**
 * Python's difflib.SequenceMatcher matching-block algorithm (Ratcliff/Obershelp "gestalt pattern
 * matching"), re-implemented from its documented behaviour, because the CrowS-Pairs reference metric
 * (nyu-mll/crows-pairs metric.py) aligns the two sentences with it: the equal opcodes decide which
 * tokens are scored. Semantics kept: no junk function, autojunk on (elements occurring more than
 * 1% + 1 times in a sequence of ≥ 200 are "popular" and cannot seed a match, but extend one).
 */
export type OpTag = 'equal' | 'replace' | 'delete' | 'insert';
export type Opcode = [OpTag, number, number, number, number];
type Block = [number, number, number];

export class SequenceMatcher<T> {
  private readonly b2j = new Map<T, number[]>();

  constructor(
    private readonly a: readonly T[],
    private readonly b: readonly T[],
    autojunk = true,
  ) {
    b.forEach((x, j) => {
      const list = this.b2j.get(x);
      if (list) list.push(j);
      else this.b2j.set(x, [j]);
    });
    const n = b.length;
    if (autojunk && n >= 200) {
      const ntest = Math.floor(n / 100) + 1;
      for (const [x, idx] of [...this.b2j]) if (idx.length > ntest) this.b2j.delete(x);
    }
  }

  /** Longest matching block in a[alo:ahi], b[blo:bhi]; earliest in a, then in b, among ties. */
  findLongestMatch(alo: number, ahi: number, blo: number, bhi: number): Block {
    const { a, b } = this;
    let besti = alo;
    let bestj = blo;
    let bestsize = 0;
    let j2len = new Map<number, number>();
    for (let i = alo; i < ahi; i++) {
      const newj2len = new Map<number, number>();
      for (const j of this.b2j.get(a[i]!) ?? []) {
        if (j < blo) continue;
        if (j >= bhi) break;
        const k = (j2len.get(j - 1) ?? 0) + 1;
        newj2len.set(j, k);
        if (k > bestsize) {
          besti = i - k + 1;
          bestj = j - k + 1;
          bestsize = k;
        }
      }
      j2len = newj2len;
    }
    // Extend with equal elements on both sides (popular elements included; there is no junk).
    while (besti > alo && bestj > blo && a[besti - 1] === b[bestj - 1]) {
      besti--;
      bestj--;
      bestsize++;
    }
    while (besti + bestsize < ahi && bestj + bestsize < bhi && a[besti + bestsize] === b[bestj + bestsize]) bestsize++;
    return [besti, bestj, bestsize];
  }

  matchingBlocks(): Block[] {
    const la = this.a.length;
    const lb = this.b.length;
    const queue: [number, number, number, number][] = [[0, la, 0, lb]];
    const blocks: Block[] = [];
    while (queue.length > 0) {
      const [alo, ahi, blo, bhi] = queue.pop()!;
      const x = this.findLongestMatch(alo, ahi, blo, bhi);
      const [i, j, k] = x;
      if (k > 0) {
        blocks.push(x);
        if (alo < i && blo < j) queue.push([alo, i, blo, j]);
        if (i + k < ahi && j + k < bhi) queue.push([i + k, ahi, j + k, bhi]);
      }
    }
    blocks.sort((p, q) => p[0] - q[0] || p[1] - q[1] || p[2] - q[2]);
    // Collapse adjacent blocks.
    const out: Block[] = [];
    let [i1, j1, k1] = [0, 0, 0];
    for (const [i2, j2, k2] of blocks) {
      if (i1 + k1 === i2 && j1 + k1 === j2) k1 += k2;
      else {
        if (k1 > 0) out.push([i1, j1, k1]);
        [i1, j1, k1] = [i2, j2, k2];
      }
    }
    if (k1 > 0) out.push([i1, j1, k1]);
    out.push([la, lb, 0]);
    return out;
  }

  opcodes(): Opcode[] {
    let i = 0;
    let j = 0;
    const out: Opcode[] = [];
    for (const [ai, bj, size] of this.matchingBlocks()) {
      const tag: OpTag | '' = i < ai && j < bj ? 'replace' : i < ai ? 'delete' : j < bj ? 'insert' : '';
      if (tag !== '') out.push([tag, i, ai, j, bj]);
      i = ai + size;
      j = bj + size;
      if (size > 0) out.push(['equal', ai, i, bj, j]);
    }
    return out;
  }
}

/** Indices of the tokens the two sequences share (the "equal" opcodes), as metric.py's templates. */
export function sharedTemplates<T>(a: readonly T[], b: readonly T[]): { t1: number[]; t2: number[] } {
  const t1: number[] = [];
  const t2: number[] = [];
  for (const [tag, i1, i2, j1, j2] of new SequenceMatcher(a, b).opcodes()) {
    if (tag !== 'equal') continue;
    for (let i = i1; i < i2; i++) t1.push(i);
    for (let j = j1; j < j2; j++) t2.push(j);
  }
  return { t1, t2 };
}
