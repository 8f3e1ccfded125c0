/**
 * Reading report.html back against results.json, written independently of src/audit/report: the
 * page is parsed as text, each printed number is compared with the value behind it to the precision
 * it is printed with, the heatmap's outlined cells are compared with `significant`, and the Pareto
 * front drawn is compared with the front of the plotted points computed here by its definition.
 */
import assert from 'node:assert/strict';
import type { AuditResults, BenchmarkAudit, PairedCell } from '../src/audit/types.js';

const unescape = (s: string): string => s.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&amp;/g, '&');
const text = (html: string): string => unescape(html.replace(/<[^>]*>/g, '')).trim();

/** Rows of cells (text) of every <table> in `html`, in order; each row with its raw cell HTML too. */
function tables(html: string): { cells: string[]; raw: string[] }[][] {
  return [...html.matchAll(/<table>([\s\S]*?)<\/table>/g)].map((t) =>
    [...t[1]!.matchAll(/<tr>([\s\S]*?)<\/tr>/g)].map((r) => {
      const raw = [...r[1]!.matchAll(/<t[dh][^>]*>([\s\S]*?)<\/t[dh]>/g)].map((c) => c[1]!);
      return { raw, cells: raw.map(text) };
    }),
  );
}

/**
 * `shown` is `value` as printed: "n/a" for a non-finite value, otherwise a decimal or exponential
 * number (optionally with a % sign, then ×100) equal to the value within half a unit of its last digit.
 */
export function assertShown(shown: string, value: number, where: string, percent = false): void {
  if (!Number.isFinite(value)) {
    assert.equal(shown, 'n/a', `${where}: ${value} shown as "${shown}"`);
    return;
  }
  const m = /^(-?)(\d+)(?:\.(\d+))?(?:e([+-]\d+))?(%?)$/.exec(shown);
  assert.ok(m, `${where}: "${shown}" is not a number (value ${value})`);
  assert.equal(m[5] === '%', percent, `${where}: "${shown}"`);
  const unit = 10 ** (-(m[3]?.length ?? 0) + Number(m[4] ?? 0));
  const v = percent ? 100 * value : value;
  assert.ok(Math.abs(Number(shown.replace('%', '')) - v) <= unit / 2 + 1e-9 * Math.abs(v), `${where}: "${shown}" for ${v}`);
}

/** A p-value as printed: "<0.001" below 0.001, else as assertShown. */
function assertP(shown: string, p: number, where: string): void {
  if (shown === '<0.001') assert.ok(p < 0.001, `${where}: "<0.001" for ${p}`);
  else assertShown(shown, p, where);
}

function assertCi(shown: string, ci: [number, number], where: string): void {
  const m = /^\[(.*), (.*)\]$/.exec(shown);
  assert.ok(m, `${where}: "${shown}" is not an interval`);
  assertShown(m[1]!, ci[0], `${where} lower`);
  assertShown(m[2]!, ci[1], `${where} upper`);
}

/** Is `raw` (a cell's HTML) marked as a significant change? */
const markedSignificant = (raw: string): boolean => /class="sig /.test(raw);

/** The Pareto-optimal points (lower is better on both), by the definition: no other point is ≤ on both and < on one. */
export function paretoFront<T extends { q: number; bias: number }>(pts: readonly T[]): T[] {
  return pts.filter((p) => !pts.some((o) => o !== p && o.q <= p.q && o.bias <= p.bias && (o.q < p.q || o.bias < p.bias)));
}

function section(html: string, benchmark: string): string {
  const m = new RegExp(`<section id="${benchmark}">([\\s\\S]*?)</section>`).exec(html);
  assert.ok(m, `a section for ${benchmark}`);
  return m[1]!;
}

function checkHeatmap(sec: string, b: BenchmarkAudit): number {
  const svg = /<svg data-chart="heatmap"[\s\S]*?<\/svg>/.exec(sec)?.[0];
  assert.ok(svg, `${b.benchmark}: heatmap`);
  const rects = [...svg.matchAll(/<rect class="mark cell( significant)?"[^>]*stroke="([^"]*)" stroke-width="([^"]*)"><title>([\s\S]*?)<\/title><\/rect>/g)];
  const expected: [string, string, PairedCell][] = b.variants.flatMap((v) => [
    [v.variant, '(all)', v.overall] as [string, string, PairedCell],
    ...Object.keys(b.dense.groups).filter((g) => v.groups[g] !== undefined).map((g) => [v.variant, g, v.groups[g]!] as [string, string, PairedCell]),
  ]);
  assert.equal(rects.length, expected.length, `${b.benchmark}: one heatmap cell per variant × (overall + groups)`);
  let outlined = 0;
  for (const [variant, group, c] of expected) {
    const r = rects.find((x) => unescape(x[4]!).startsWith(`${variant} / ${group}: `));
    assert.ok(r, `${b.benchmark}: cell ${variant} / ${group}`);
    const where = `${b.benchmark} heatmap ${variant} / ${group}`;
    const isOutlined = r[1] !== undefined || r[2] === '#000';
    assert.equal(r[1] !== undefined, c.significant, `${where}: class "significant"`);
    assert.equal(r[2] === '#000' && Number(r[3]) > 1, c.significant, `${where}: black outline (significant ${c.significant}, p ${c.p}, p_holm ${c.pHolm})`);
    if (isOutlined) outlined++;
    const t = /: Δ (\S+) (\[.*?\]), p_holm (\S+)$/.exec(unescape(r[4]!));
    assert.ok(t, `${where}: title`);
    assertShown(t[1]!, c.delta, `${where} Δ`);
    assertCi(t[2]!, c.deltaCi95, `${where} Δ CI`);
    assertP(t[3]!, c.pHolm, `${where} p_holm`);
  }
  return outlined;
}

function checkPareto(sec: string, r: AuditResults, b: BenchmarkAudit): void {
  const models = [r.dense, ...r.variants];
  const pts = models
    .filter((m) => m.quality !== undefined)
    .map((m) => {
      const s = m === r.dense ? b.dense.overall.score : b.variants.find((v) => v.variant === m.name)?.overall.score.score ?? NaN;
      return { name: m.name, q: m.quality!.value, bias: Math.abs(s - b.neutral) };
    })
    .filter((p) => Number.isFinite(p.q) && Number.isFinite(p.bias));
  const svg = /<svg data-chart="pareto"[\s\S]*?<\/svg>/.exec(sec)?.[0];
  if (pts.length < 2) {
    assert.equal(svg, undefined, `${b.benchmark}: no quality plot for fewer than two points`);
    return;
  }
  assert.ok(svg, `${b.benchmark}: quality plot`);
  const circles = [...svg.matchAll(/<circle class="mark point" cx="([^"]+)" cy="([^"]+)" r="([^"]+)"[^>]*><title>([\s\S]*?)<\/title>/g)].map((c) => ({
    cx: Number(c[1]), cy: Number(c[2]), r: Number(c[3]), title: unescape(c[4]!),
  }));
  assert.equal(circles.length, pts.length, `${b.benchmark}: one point per model with a quality value`);
  const at = pts.map((p) => {
    const c = circles.find((x) => x.title.startsWith(`${p.name}: `));
    assert.ok(c, `${b.benchmark}: point ${p.name}`);
    const t = /: \S+ (\S+), \|bias\| (\S+)$/.exec(c.title);
    assert.ok(t, c.title);
    assertShown(t[1]!, p.q, `${b.benchmark} ${p.name} quality`);
    assertShown(t[2]!, p.bias, `${b.benchmark} ${p.name} |bias|`);
    return { ...p, ...c };
  });
  // Placed where the values say: x increases with quality, y (SVG, downwards) decreases with |bias|.
  for (const a of at) {
    for (const c of at) {
      if (a.q < c.q) assert.ok(a.cx < c.cx, `${b.benchmark}: x of ${a.name} vs ${c.name}`);
      if (a.bias < c.bias) assert.ok(a.cy > c.cy, `${b.benchmark}: y of ${a.name} vs ${c.name}`);
    }
  }
  const front = paretoFront(at);
  assert.deepEqual(at.filter((p) => p.r === 5).map((p) => p.name).sort(), front.map((p) => p.name).sort(), `${b.benchmark}: points marked on the front`);
  assert.ok(at.filter((p) => p.r !== 5).every((p) => p.r === 4));
  const d = /<path class="mark front" d="([^"]*)"/.exec(svg)?.[1];
  assert.ok(d !== undefined, `${b.benchmark}: front line`);
  const vertices = [...d.matchAll(/[ML]([^,LM]+),([^LM]+)/g)].map((v) => [Number(v[1]), Number(v[2])]);
  assert.deepEqual(vertices, [...front].sort((a, c) => a.q - c.q || a.bias - c.bias).map((p) => [p.cx, p.cy]), `${b.benchmark}: the front line joins the front in quality order`);
}

/** Every check above, for every benchmark of `r`; returns the number of outlined heatmap cells. */
export function checkReport(html: string, r: AuditResults): number {
  let outlined = 0;
  // Models.
  const [models] = tables(html.slice(0, html.indexOf('<section')));
  const all = [r.dense, ...r.variants];
  assert.equal(models!.length, 1 + all.length);
  all.forEach((m, i) => {
    const row = models![i + 1]!.cells;
    assert.equal(row[0], m.name);
    assert.equal(row[1], m.spec || '—');
    if (m.quality) {
      assert.equal(row[2]!.split(' ')[0], m.quality.kind);
      assertShown(row[2]!.split(' ')[1]!, m.quality.value, `${m.name} quality`);
    } else assert.equal(row[2], '—');
    if (m.quality?.lms !== undefined) assertShown(row[3]!, m.quality.lms, `${m.name} LMS`);
    else assert.equal(row[3], '—');
    assert.ok(m.weightsSha256.startsWith(row[4]!) && row[4]!.length === 12, `${m.name} weights`);
    if (m.size !== undefined) assertShown(row[5]!.split(' ')[0]!, m.size.bytes / 1e6, `${m.name} size`);
    else assert.equal(row[5], '—');
    if (m.saw === undefined) assert.equal(row[6], '—');
    else if (m.saw.calibration) assert.ok(row[6]!.includes(m.saw.calibration.sha256.slice(0, 8)), `${m.name} calibration hash`);
  });
  for (const b of r.benchmarks) {
    const sec = section(html, b.benchmark);
    const [overall, groups, exemplars] = tables(sec);
    // Overall: the dense row, then one row per variant.
    assert.equal(overall!.length, 2 + b.variants.length, `${b.benchmark}: overall rows`);
    const dense = overall![1]!.cells;
    assert.equal(dense[0], 'dense');
    assertShown(dense[1]!, b.dense.overall.score, `${b.benchmark} dense score`);
    assertCi(dense[2]!, b.dense.overall.ci95, `${b.benchmark} dense CI`);
    assert.equal(Number(dense[3]), b.dense.overall.n);
    b.variants.forEach((v, i) => {
      const { cells, raw } = overall![i + 2]!;
      const w = `${b.benchmark} ${v.variant}`;
      assert.equal(cells[0], v.variant);
      assertShown(cells[1]!, v.overall.score.score, `${w} score`);
      assertCi(cells[2]!, v.overall.score.ci95, `${w} CI`);
      assert.equal(Number(cells[3]), v.overall.score.n, `${w} n`);
      assertShown(cells[4]!, v.overall.delta, `${w} Δ`);
      assert.equal(markedSignificant(raw[4]!), v.overall.significant, `${w}: Δ marked significant`);
      assertCi(cells[5]!, v.overall.deltaCi95, `${w} Δ CI`);
      assert.equal(cells[6], v.overall.test);
      assertP(cells[7]!, v.overall.p, `${w} p`);
      assertShown(cells[8]!, v.flips.rate, `${w} flip rate`, true);
    });
    // By group: every (variant, group) cell.
    const expected = b.variants.flatMap((v) => Object.entries(v.groups).map(([g, c]) => ({ v, g, c })));
    assert.equal(groups!.length, 1 + expected.length, `${b.benchmark}: group rows`);
    expected.forEach(({ v, g, c }, i) => {
      const { cells, raw } = groups![i + 1]!;
      const w = `${b.benchmark} ${v.variant} / ${g}`;
      assert.deepEqual(cells.slice(0, 2), [v.variant, g]);
      assertShown(cells[2]!, b.dense.groups[g]?.score ?? NaN, `${w} dense`);
      assertShown(cells[3]!, c.score.score, `${w} variant`);
      assertShown(cells[4]!, c.delta, `${w} Δ`);
      assert.equal(markedSignificant(raw[4]!), c.significant, `${w}: Δ marked significant`);
      assertCi(cells[5]!, c.deltaCi95, `${w} Δ CI`);
      assertP(cells[6]!, c.p, `${w} p`);
      assertP(cells[7]!, c.pHolm, `${w} p_holm`);
      assert.equal(Number(cells[8]), c.score.n, `${w} n`);
    });
    // Exemplars: the first five of each variant, in order.
    const ex = b.variants.flatMap((v) => v.exemplars.slice(0, 5).map((e) => ({ v, e })));
    if (ex.length === 0) assert.equal(exemplars, undefined, `${b.benchmark}: no exemplar table`);
    else {
      assert.equal(exemplars!.length, 1 + ex.length);
      ex.forEach(({ v, e }, i) => {
        const row = exemplars![i + 1]!.cells;
        assert.deepEqual(row.slice(0, 4), [v.variant, e.id, e.group, e.direction]);
        assertShown(row[4]!, e.denseScore, `${b.benchmark} exemplar ${e.id} dense`);
        assertShown(row[5]!, e.variantScore, `${b.benchmark} exemplar ${e.id} variant`);
        assert.equal(row[6], (e.text ?? '').trim());
      });
    }
    outlined += checkHeatmap(sec, b);
    checkPareto(sec, r, b);
  }
  // Data files.
  const data = tables(html.slice(html.lastIndexOf('<h2>Data</h2>')))[0]!;
  assert.deepEqual(data.slice(1).map((x) => x.cells), r.data.map((d) => [d.file, d.sha256]));
  return outlined;
}
