/**
 * report.html: one self-contained page (inline CSS and SVG, no scripts, no network) drawn from
 * results.json. Plots where people would rather look than read — bias vs compression level with CI
 * bands, a Δ heatmap marking significant cells, quality vs bias with its Pareto front, and CIE
 * over-representation bars — each followed by the table behind it.
 */
import type { AuditResults, BenchmarkAudit, ModelEntry, VariantComparison } from '../types.js';
import { FRAME, PALETTE, axes, diverging, esc, fmt, linear } from './svg.js';

const CSS = `
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#1d1d1f;max-width:1180px;margin:24px auto;padding:0 20px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:34px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:20px 0 6px}.muted{color:#666}.grid{display:flex;flex-wrap:wrap;gap:18px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f6f6f6}td.l,th.l{text-align:left}.sig{font-weight:700}.up{color:#b2182b}.down{color:#2166ac}
figure{margin:0}figcaption{font-size:12px;color:#555;max-width:560px}.legend span{display:inline-block;margin-right:12px;font-size:12px}
.swatch{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}
`;

function table(headers: string[], rows: (string | number)[][], leftCols = 1): string {
  const th = headers.map((h, i) => `<th class="${i < leftCols ? 'l' : ''}">${esc(h)}</th>`).join('');
  const tr = rows.map((r) => `<tr>${r.map((c, i) => `<td class="${i < leftCols ? 'l' : ''}">${typeof c === 'number' ? (Number.isInteger(c) ? String(c) : fmt(c)) : c}</td>`).join('')}</tr>`).join('');
  return `<table><thead><tr>${th}</tr></thead><tbody>${tr}</tbody></table>`;
}

function ci(c: [number, number]): string {
  return `[${fmt(c[0])}, ${fmt(c[1])}]`;
}

function pval(p: number): string {
  return !Number.isFinite(p) ? 'n/a' : p < 0.001 ? '<0.001' : fmt(p, 3);
}

/** Variants of a sweep family, in level order, with the dense model as level 0. */
function sweepFamilies(r: AuditResults): Map<string, ModelEntry[]> {
  const fams = new Map<string, ModelEntry[]>();
  for (const v of r.variants) {
    if (v.family === undefined || v.level === undefined) continue;
    const list = fams.get(v.family) ?? [];
    list.push(v);
    fams.set(v.family, list);
  }
  for (const list of fams.values()) list.sort((a, b) => a.level! - b.level!);
  return fams;
}

/** Bias score vs compression level for one benchmark and sweep family: overall with CI band, groups as thin lines. */
function sweepChart(b: BenchmarkAudit, family: string, members: ModelEntry[]): string {
  const fr = FRAME;
  const points = [
    { level: 0, overall: b.dense.overall, groups: b.dense.groups },
    ...members.map((m) => {
      const v = b.variants.find((x) => x.variant === m.name)!;
      return { level: m.level!, overall: v.overall.score, groups: Object.fromEntries(Object.entries(v.groups).map(([g, c]) => [g, c.score])) };
    }),
  ];
  const groups = Object.keys(b.dense.groups);
  const ys = points.flatMap((p) => [p.overall.ci95[0], p.overall.ci95[1], p.overall.score, ...groups.map((g) => p.groups[g]?.score ?? NaN)]).filter(Number.isFinite);
  ys.push(b.neutral);
  const x = linear(0, Math.max(...points.map((p) => p.level)), fr.left, fr.width - fr.right);
  const y = linear(Math.min(...ys), Math.max(...ys), fr.height - fr.bottom, fr.top);
  const band =
    points.map((p, i) => `${i ? 'L' : 'M'}${x(p.level)},${y(p.overall.ci95[1])}`).join('') +
    [...points].reverse().map((p) => `L${x(p.level)},${y(p.overall.ci95[0])}`).join('') + 'Z';
  const line = (vals: number[], color: string, w: number, cls: string): string =>
    `<path class="${cls}" d="${points.map((p, i) => `${i ? 'L' : 'M'}${x(p.level)},${y(vals[i]!)}`).join('')}" fill="none" stroke="${color}" stroke-width="${w}"/>`;
  const parts = [
    `<svg data-chart="sweep" role="img" aria-label="${esc(`${b.benchmark} vs ${family} level`)}" width="${fr.width}" height="${fr.height}" viewBox="0 0 ${fr.width} ${fr.height}">`,
    axes(x, y, fr, `${family} level (0 = dense)`, b.metric.length > 40 ? b.benchmark + ' score' : b.metric),
    `<line x1="${fr.left}" x2="${fr.width - fr.right}" y1="${y(b.neutral)}" y2="${y(b.neutral)}" stroke="#999" stroke-dasharray="4 3"/>`,
    `<path class="mark band" d="${band}" fill="${PALETTE[0]}" fill-opacity="0.18" stroke="none"/>`,
    ...groups.map((g, i) => line(points.map((p) => p.groups[g]?.score ?? NaN), PALETTE[(i % (PALETTE.length - 1)) + 1]!, 1.2, 'mark group-line')),
    line(points.map((p) => p.overall.score), PALETTE[0]!, 2.6, 'mark overall-line'),
    ...points.map((p) => `<circle class="mark" cx="${x(p.level)}" cy="${y(p.overall.score)}" r="3.5" fill="${PALETTE[0]}"><title>${fmt(p.level)}: ${fmt(p.overall.score)} ${ci(p.overall.ci95)}</title></circle>`),
    '</svg>',
  ];
  const legend = `<div class="legend"><span><i class="swatch" style="background:${PALETTE[0]}"></i>all (95% CI band)</span>${groups
    .map((g, i) => `<span><i class="swatch" style="background:${PALETTE[(i % (PALETTE.length - 1)) + 1]}"></i>${esc(g)}</span>`)
    .join('')}<span>– – no bias (${fmt(b.neutral)})</span></div>`;
  return `<figure>${parts.join('')}${legend}<figcaption>${esc(b.benchmark)} (${esc(b.scorer)}) against ${esc(family)} level. Band: 95% bootstrap interval of the overall score.</figcaption></figure>`;
}

/** Compression-identified exemplars: flip rate (% of items whose outcome changed) against level. */
function flipRateChart(b: BenchmarkAudit, family: string, members: ModelEntry[]): string {
  const pts = [{ level: 0, rate: 0 }, ...members.map((m) => ({ level: m.level!, rate: 100 * (b.variants.find((v) => v.variant === m.name)?.flips.rate ?? NaN) }))];
  if (pts.slice(1).every((p) => !Number.isFinite(p.rate))) return '';
  const fr = FRAME;
  const x = linear(0, Math.max(...pts.map((p) => p.level)), fr.left, fr.width - fr.right);
  const y = linear(0, Math.max(1, ...pts.map((p) => p.rate).filter(Number.isFinite)), fr.height - fr.bottom, fr.top);
  const ok = pts.filter((p) => Number.isFinite(p.rate));
  return `<figure><svg data-chart="flip-rate" role="img" aria-label="${esc(`${b.benchmark} flip rate vs ${family} level`)}" width="${fr.width}" height="${fr.height}" viewBox="0 0 ${fr.width} ${fr.height}">${axes(x, y, fr, `${family} level (0 = dense)`, '% of items flipped')}<path class="mark flip-line" d="${ok.map((p, i) => `${i ? 'L' : 'M'}${x(p.level)},${y(p.rate)}`).join('')}" fill="none" stroke="${PALETTE[1]}" stroke-width="2.2"/>${ok
    .map((p) => `<circle class="mark" cx="${x(p.level)}" cy="${y(p.rate)}" r="3.5" fill="${PALETTE[1]}"><title>${fmt(p.level)}: ${fmt(p.rate, 1)}% flipped</title></circle>`)
    .join('')}</svg><figcaption>${esc(b.benchmark)}: share of items whose outcome flips between the dense model and each ${esc(family)} level (compression-identified exemplars).</figcaption></figure>`;
}

/** Δ heatmap: variants × groups, colour = Δ vs dense, ● = significant after Holm. */
function heatmap(b: BenchmarkAudit): string {
  const groups = ['(all)', ...Object.keys(b.dense.groups)];
  const cell = 46;
  const left = 150;
  const top = 96;
  const w = left + groups.length * cell + 90;
  const h = top + b.variants.length * cell + 10;
  const deltas = b.variants.flatMap((v) => [v.overall.delta, ...Object.values(v.groups).map((c) => c.delta)]).filter(Number.isFinite);
  const maxAbs = Math.max(1e-12, ...deltas.map(Math.abs));
  const parts = [`<svg data-chart="heatmap" role="img" aria-label="${esc(b.benchmark)} delta heatmap" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" font-size="11">`];
  groups.forEach((g, j) => parts.push(`<text transform="translate(${left + j * cell + cell / 2} ${top - 6}) rotate(-40)" >${esc(g)}</text>`));
  b.variants.forEach((v, i) => {
    parts.push(`<text x="${left - 6}" y="${top + i * cell + cell / 2 + 4}" text-anchor="end">${esc(v.variant)}</text>`);
    groups.forEach((g, j) => {
      const c = g === '(all)' ? v.overall : v.groups[g];
      if (!c) return;
      const sig = c.significant;
      parts.push(
        `<rect class="mark cell${sig ? ' significant' : ''}" x="${left + j * cell}" y="${top + i * cell}" width="${cell - 2}" height="${cell - 2}" fill="${diverging(c.delta / maxAbs)}" stroke="${sig ? '#000' : '#fff'}" stroke-width="${sig ? 2 : 1}"><title>${esc(v.variant)} / ${esc(g)}: Δ ${fmt(c.delta)} ${ci(c.deltaCi95)}, p_holm ${pval(c.pHolm)}</title></rect>`,
        `<text x="${left + j * cell + cell / 2 - 1}" y="${top + i * cell + cell / 2 + 3}" text-anchor="middle" font-size="10">${fmt(c.delta, 1)}${sig ? ' ●' : ''}</text>`,
      );
    });
  });
  parts.push('</svg>');
  return `<figure>${parts.join('')}<figcaption>Δ = variant − dense for ${esc(b.benchmark)}; red = higher score, blue = lower; ● and a black border = significant at α after Holm–Bonferroni across the benchmark's groups.</figcaption></figure>`;
}

/** Quality (x, lower is better) vs distance from no bias (y, lower is better), with the Pareto front. */
function qualityScatter(r: AuditResults, b: BenchmarkAudit): string {
  const models = [r.dense, ...r.variants].filter((m) => m.quality !== undefined);
  if (models.length < 2) return '';
  const pts = models.map((m) => {
    const s = m.name === r.dense.name ? b.dense.overall.score : b.variants.find((v) => v.variant === m.name)?.overall.score.score ?? NaN;
    return { name: m.name, q: m.quality!.value, bias: Math.abs(s - b.neutral) };
  }).filter((p) => Number.isFinite(p.q) && Number.isFinite(p.bias));
  if (pts.length < 2) return '';
  const front = pts.filter((p) => !pts.some((o) => o !== p && o.q <= p.q && o.bias <= p.bias && (o.q < p.q || o.bias < p.bias))).sort((a, c) => a.q - c.q);
  const fr = FRAME;
  const x = linear(Math.min(...pts.map((p) => p.q)), Math.max(...pts.map((p) => p.q)), fr.left, fr.width - fr.right);
  const y = linear(0, Math.max(...pts.map((p) => p.bias)), fr.height - fr.bottom, fr.top);
  const kind = models[0]!.quality!.kind;
  const parts = [
    `<svg data-chart="pareto" role="img" aria-label="quality vs bias" width="${fr.width}" height="${fr.height}" viewBox="0 0 ${fr.width} ${fr.height}">`,
    axes(x, y, fr, `${kind} (lower is better)`, `|${b.benchmark} − ${fmt(b.neutral)}|`),
    `<path class="mark front" d="${front.map((p, i) => `${i ? 'L' : 'M'}${x(p.q)},${y(p.bias)}`).join('')}" fill="none" stroke="${PALETTE[1]}" stroke-width="1.5" stroke-dasharray="5 3"/>`,
    ...pts.map((p) => {
      const onFront = front.includes(p);
      return `<circle class="mark point" cx="${x(p.q)}" cy="${y(p.bias)}" r="${onFront ? 5 : 4}" fill="${onFront ? PALETTE[1] : '#777'}"><title>${esc(p.name)}: ${kind} ${fmt(p.q)}, |bias| ${fmt(p.bias)}</title></circle><text x="${x(p.q) + 7}" y="${y(p.bias) - 6}" font-size="10">${esc(p.name)}</text>`;
    }),
    '</svg>',
  ];
  return `<figure>${parts.join('')}<figcaption>Quality against distance from no bias on ${esc(b.benchmark)}; the dashed line joins the Pareto-optimal models (no other model is better on both).</figcaption></figure>`;
}

/**
 * The three-way Pareto set of (size, quality, bias): a model is on it unless another is no worse on
 * all three (size in bytes, held-out (pseudo-)perplexity, |score − neutral|) and better on one.
 */
export function paretoSet3<T extends { size: number; q: number; bias: number }>(pts: readonly T[]): T[] {
  const dominates = (o: T, p: T): boolean => o.size <= p.size && o.q <= p.q && o.bias <= p.bias && (o.size < p.size || o.q < p.q || o.bias < p.bias);
  return pts.filter((p) => !pts.some((o) => o !== p && dominates(o, p)));
}

/** Size (x) against distance from no bias (y); colour = held-out quality; larger rings = on the 3-way Pareto set. */
function sizeParetoChart(r: AuditResults, b: BenchmarkAudit): string {
  const models = [r.dense, ...r.variants].filter((m) => m.size !== undefined && m.quality !== undefined);
  if (models.length < 2) return '';
  const pts = models.map((m) => {
    const s = m.name === r.dense.name ? b.dense.overall.score : b.variants.find((v) => v.variant === m.name)?.overall.score.score ?? NaN;
    return { name: m.name, size: m.size!.bytes / 1e6, q: m.quality!.value, bias: Math.abs(s - b.neutral) };
  }).filter((p) => Number.isFinite(p.size) && Number.isFinite(p.q) && Number.isFinite(p.bias));
  if (pts.length < 2) return '';
  const front = paretoSet3(pts);
  const fr = FRAME;
  const x = linear(Math.min(...pts.map((p) => p.size)), Math.max(...pts.map((p) => p.size)), fr.left, fr.width - fr.right);
  const y = linear(0, Math.max(...pts.map((p) => p.bias)), fr.height - fr.bottom, fr.top);
  const qs = pts.map((p) => p.q);
  const qLo = Math.min(...qs);
  const qHi = Math.max(...qs);
  const kind = models[0]!.quality!.kind;
  const shade = (q: number): string => diverging(qHi > qLo ? (2 * (q - qLo)) / (qHi - qLo) - 1 : 0);
  const parts = [
    `<svg data-chart="pareto-size" role="img" aria-label="size, quality and bias" width="${fr.width}" height="${fr.height}" viewBox="0 0 ${fr.width} ${fr.height}">`,
    axes(x, y, fr, 'size (MB, 16-bit values; quantized and pruned matrices as stored)', `|${b.benchmark} − ${fmt(b.neutral)}|`),
    ...pts.map((p) => {
      const on = front.includes(p);
      return `<circle class="mark point${on ? ' front' : ''}" cx="${x(p.size)}" cy="${y(p.bias)}" r="${on ? 6 : 4}" fill="${shade(p.q)}" stroke="${on ? '#000' : '#777'}" stroke-width="${on ? 2 : 1}"><title>${esc(p.name)}: ${fmt(p.size)} MB, ${kind} ${fmt(p.q)}, |bias| ${fmt(p.bias)}${on ? ' (Pareto)' : ''}</title></circle><text x="${x(p.size) + 7}" y="${y(p.bias) - 6}" font-size="10">${esc(p.name)}</text>`;
    }),
    '</svg>',
  ];
  return `<figure>${parts.join('')}<figcaption>Size against distance from no bias on ${esc(b.benchmark)}; colour = ${esc(kind)} (blue = best, red = worst of these models); black rings = Pareto-optimal in (size, ${esc(kind)}, bias): no other model is at least as good on all three and better on one.</figcaption></figure>`;
}

/** Share of flips vs share of items per group, for one variant. */
function cieBars(b: BenchmarkAudit, v: VariantComparison): string {
  const groups = v.flips.byGroup;
  if (groups.length === 0 || v.flips.total === 0) return '';
  const rowH = 22;
  const left = 150;
  const width = 560;
  const height = 30 + groups.length * rowH + 20;
  const x = linear(0, Math.max(...groups.map((g) => Math.max(g.shareOfFlips, g.shareOfItems))), left, width - 60);
  const parts = [`<svg data-chart="cie" role="img" aria-label="CIE over-representation" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-size="11">`];
  groups.forEach((g, i) => {
    const y0 = 20 + i * rowH;
    parts.push(
      `<text x="${left - 6}" y="${y0 + 12}" text-anchor="end">${esc(g.group)}</text>`,
      `<rect class="mark bar flips" x="${left}" y="${y0}" width="${Math.max(0, x(g.shareOfFlips) - left)}" height="9" fill="${g.fisherPHolm < 0.05 ? PALETTE[1] : '#e8a07a'}"><title>${esc(g.group)}: ${fmt(100 * g.shareOfFlips, 1)}% of flips, Fisher p_holm ${pval(g.fisherPHolm)}</title></rect>`,
      `<rect class="mark bar items" x="${left}" y="${y0 + 10}" width="${Math.max(0, x(g.shareOfItems) - left)}" height="9" fill="#aaa"><title>${esc(g.group)}: ${fmt(100 * g.shareOfItems, 1)}% of items</title></rect>`,
      `<text x="${Math.max(x(g.shareOfFlips), x(g.shareOfItems)) + 4}" y="${y0 + 12}">${fmt(g.flipRate * 100, 1)}% flip${g.fisherPHolm < 0.05 ? ' *' : ''}</text>`,
    );
  });
  parts.push('</svg>');
  return `<figure>${parts.join('')}<figcaption>${esc(b.benchmark)}, ${esc(v.variant)}: each group's share of the ${v.flips.total} compression-identified exemplars (orange) against its share of items (grey); * = over-represented (Fisher exact, Holm).</figcaption></figure>`;
}

function benchmarkSection(r: AuditResults, b: BenchmarkAudit): string {
  const fams = sweepFamilies(r);
  const charts: string[] = [];
  for (const [family, members] of fams) {
    charts.push(sweepChart(b, family, members));
    const flipsChart = flipRateChart(b, family, members);
    if (flipsChart) charts.push(flipsChart);
  }
  charts.push(heatmap(b));
  const scatter = qualityScatter(r, b);
  if (scatter) charts.push(scatter);
  const sizeChart = sizeParetoChart(r, b);
  if (sizeChart) charts.push(sizeChart);
  const worst = [...b.variants].sort((a, c) => c.flips.total - a.flips.total)[0];
  if (worst) {
    const bars = cieBars(b, worst);
    if (bars) charts.push(bars);
  }
  const rows: (string | number)[][] = [['dense', fmt(b.dense.overall.score), ci(b.dense.overall.ci95), b.dense.overall.n, '', '', '', '', '']];
  for (const v of b.variants) {
    const c = v.overall;
    const cls = c.significant ? (c.delta > 0 ? 'sig up' : 'sig down') : '';
    rows.push([esc(v.variant), fmt(c.score.score), ci(c.score.ci95), c.score.n, `<span class="${cls}">${fmt(c.delta)}</span>`, ci(c.deltaCi95), `${c.test}`, pval(c.p), fmt(100 * v.flips.rate, 1) + '%']);
  }
  const groupRows: (string | number)[][] = [];
  for (const v of b.variants) {
    for (const [g, c] of Object.entries(v.groups)) {
      groupRows.push([esc(v.variant), esc(g), fmt(b.dense.groups[g]?.score ?? NaN), fmt(c.score.score), `<span class="${c.significant ? 'sig ' + (c.delta > 0 ? 'up' : 'down') : ''}">${fmt(c.delta)}</span>`, ci(c.deltaCi95), pval(c.p), pval(c.pHolm), c.score.n]);
    }
  }
  const exemplars = b.variants.flatMap((v) => v.exemplars.slice(0, 5).map((e) => [esc(v.variant), esc(e.id), esc(e.group), e.direction, fmt(e.denseScore), fmt(e.variantScore), esc(e.text ?? '')]));
  return `<section id="${esc(b.benchmark)}"><h2>${esc(b.benchmark)} <span class="muted">— ${esc(b.scorer)}: ${esc(b.metric)}</span></h2>
<div class="grid">${charts.join('')}</div>
<h3>Overall</h3>${table(['model', 'score', '95% CI', 'n', 'Δ vs dense', 'Δ 95% CI', 'test', 'p', 'flip rate'], rows)}
<h3>By group</h3>${table(['variant', 'group', 'dense', 'variant', 'Δ', 'Δ 95% CI', 'p', 'p (Holm)', 'n'], groupRows, 2)}
${exemplars.length ? `<h3>Compression-identified exemplars (top per variant)</h3>${table(['variant', 'item', 'group', 'change', 'dense score', 'variant score', 'text'], exemplars, 4)}` : ''}
</section>`;
}

/** What a model saw, in a few words (calibration file and hash prefix, pairs sources, testbed corpora). */
function seenText(m: ModelEntry): string {
  const s = m.saw;
  if (s === undefined) return '—';
  const parts: string[] = [];
  if (s.calibration) parts.push(`calibration ${s.calibration.file} ${s.calibration.sha256.slice(0, 8)}`);
  for (const p of s.pairs ?? []) parts.push(`pairs ${p.source} ${p.sha256.slice(0, 8)}`);
  if (s.training) parts.push(`testbed ${s.training.testbed} (${Object.entries(s.training.corpora).map(([k, v]) => `${k} ${v.slice(0, 8)}`).join(', ')}; benchmark items: ${s.training.benchmarks.join(', ') || 'none'})`);
  return parts.join('; ');
}

export function renderReport(r: AuditResults): string {
  const models = [r.dense, ...r.variants];
  const modelRows = models.map((m) => [
    esc(m.name),
    esc(m.spec || '—'),
    m.quality ? `${esc(m.quality.kind)} ${fmt(m.quality.value)}` : '—',
    m.quality?.lms !== undefined ? fmt(m.quality.lms) : '—',
    `<code>${esc(m.weightsSha256.slice(0, 12))}</code>`,
    m.size !== undefined ? `${fmt(m.size.bytes / 1e6)} MB (${fmt(m.size.bitsPerParam, 1)} b/param)` : '—',
    esc(seenText(m)),
  ]);
  const sigCount = r.benchmarks.reduce((s, b) => s + b.variants.reduce((t, v) => t + Object.values(v.groups).filter((c) => c.significant && c.delta !== 0).length, 0), 0);
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Dikē audit — ${esc(r.dense.dir)}</title><style>${CSS}</style></head><body>
<h1>Dikē audit</h1>
<p class="muted">Dense model <code>${esc(r.dense.dir)}</code> against ${r.variants.length} compressed variant${r.variants.length === 1 ? '' : 's'} on ${r.benchmarks.map((b) => esc(b.benchmark)).join(', ')}.
Paired statistics: bootstrap intervals resample items jointly for both models (${r.resamples} resamples, seed ${r.seed}); exact McNemar for binary outcomes, sign-flip permutation otherwise; Holm–Bonferroni across groups; α = ${r.alpha}.
${sigCount} significant group-level change${sigCount === 1 ? '' : 's'}. Dikē ${esc(r.version)}.</p>
${(r.warnings ?? []).map((w) => `<p class="warn"><b>${esc(w)}</b></p>`).join('')}
<h2>Models</h2>${table(['model', 'compression', 'quality (held-out)', 'StereoSet LMS', 'weights SHA-256', 'size', 'data seen'], modelRows, 2)}
${r.benchmarks.map((b) => benchmarkSection(r, b)).join('\n')}
<h2>Data</h2>${table(['file', 'SHA-256'], r.data.map((d) => [esc(d.file), `<code>${esc(d.sha256)}</code>`]), 2)}
</body></html>
`;
}
