/**
 * The locate section of a report (self-contained HTML, inline SVG, no scripts): per benchmark, a
 * layer × module heatmap of the leave-one-in Δ with Holm-significant cells outlined, predicted vs
 * measured Δ item score, the unit table, and the top units' flipped items with text.
 */
import { diverging, esc, fmt, FRAME, axes, linear } from '../audit/report/svg.js';
import type { LocatedBenchmark, LocateResults } from './locate.js';

const CSS = `body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:8px 0 20px}td,th{padding:3px 8px;border-bottom:1px solid #e5e5e5;text-align:right;font-variant-numeric:tabular-nums}
th{background:#f6f6f6}td.l,th.l{text-align:left}.muted{color:#666}code{font-size:12px}svg{display:block;margin:8px 0}`;

function heatmap(b: LocatedBenchmark): string {
  const units = b.units.filter((u) => u.delta !== null);
  if (units.length === 0) return '';
  const layers = [...new Set(b.units.map((u) => u.layer))].sort((x, y) => x - y);
  const col = (u: LocatedBenchmark['units'][number]): string => (u.head !== undefined ? `head ${u.head}` : u.kv_group !== undefined ? `kv ${u.kv_group}` : u.matrix !== undefined ? u.unit.replace(/^L\d+\./, '') : u.module);
  const cols = [...new Set(b.units.map(col))];
  const max = Math.max(1e-12, ...units.map((u) => Math.abs(u.delta!)));
  const cw = 92;
  const ch = 26;
  const left = 60;
  const top = 40;
  const parts = [`<svg width="${left + cw * cols.length + 10}" height="${top + ch * layers.length + 10}" font-size="11">`];
  cols.forEach((c, j) => parts.push(`<text x="${left + j * cw + cw / 2}" y="${top - 8}" text-anchor="middle">${esc(c.length > 16 ? '…' + c.slice(-15) : c)}</text>`));
  layers.forEach((l, i) => {
    parts.push(`<text x="${left - 8}" y="${top + i * ch + ch / 2 + 4}" text-anchor="end">layer ${l}</text>`);
    cols.forEach((c, j) => {
      const u = b.units.find((x) => x.layer === l && col(x) === c);
      if (u === undefined) return;
      const x = left + j * cw;
      const y = top + i * ch;
      const d = u.delta;
      const stroke = u.significant ? ' stroke="#000" stroke-width="2.5"' : ' stroke="#fff"';
      parts.push(`<rect class="mark" x="${x}" y="${y}" width="${cw - 2}" height="${ch - 2}" fill="${d === null ? '#eee' : diverging(d / max)}"${stroke}><title>${esc(u.unit)}: Δ ${d === null ? 'n/a' : fmt(d)}</title></rect>`);
      parts.push(`<text x="${x + cw / 2}" y="${y + ch / 2 + 3}" text-anchor="middle">${d === null ? '—' : fmt(d)}</text>`);
    });
  });
  parts.push('</svg>');
  return parts.join('');
}

function scatter(b: LocatedBenchmark): string {
  const pts = b.units.filter((u) => u.predicted !== null && u.score_delta !== null);
  if (pts.length === 0) return '';
  const fr = FRAME;
  const xs = pts.map((u) => u.predicted!);
  const ys = pts.map((u) => u.score_delta!);
  const x = linear(Math.min(0, ...xs), Math.max(0, ...xs), fr.left, fr.width - fr.right);
  const y = linear(Math.min(0, ...ys), Math.max(0, ...ys), fr.height - fr.bottom, fr.top);
  const dots = pts.map((u) => `<circle class="mark" cx="${x(u.predicted!)}" cy="${y(u.score_delta!)}" r="4" fill="#0072B2"><title>${esc(u.unit)}: predicted ${fmt(u.predicted!, 4)}, measured ${fmt(u.score_delta!, 4)}</title></circle>`);
  return `<svg width="${fr.width}" height="${fr.height}">${axes(x, y, fr, 'predicted Δ item score (first order)', 'measured Δ item score', (v) => fmt(v, 3))}${dots.join('')}</svg>`;
}

function table(head: string[], rows: string[][], leftCols = 1): string {
  const cell = (tag: string, s: string, i: number): string => `<${tag}${i < leftCols ? ' class="l"' : ''}>${s}</${tag}>`;
  return `<table><tr>${head.map((h, i) => cell('th', esc(h), i)).join('')}</tr>${rows.map((r) => `<tr>${r.map((s, i) => cell('td', s, i)).join('')}</tr>`).join('')}</table>`;
}

const num = (x: number | null | undefined, d = 2): string => (x === null || x === undefined ? '—' : fmt(x, d));

/** The locate section (an HTML fragment), also embedded by `dike audit --locate`. */
export function locateSection(r: LocateResults): string {
  return r.benchmarks
    .map((b) => {
      const rows = [...b.units]
        .sort((p, q) => Math.abs(q.delta ?? q.predicted ?? 0) - Math.abs(p.delta ?? p.predicted ?? 0))
        .map((u) => [
          esc(u.unit),
          num(u.delta),
          u.ci95 ? `[${fmt(u.ci95[0])}, ${fmt(u.ci95[1])}]` : '—',
          num(u.p, 3),
          num(u.pHolm, 3),
          num(u.score_delta, 4),
          num(u.predicted, 4),
          num(u.quality_delta),
          num(u.leave_one_out_delta),
          u.cie_overlap ? `${u.cie_overlap.shared}/${u.cie_overlap.full} (J ${fmt(u.cie_overlap.jaccard)})` : '—',
        ]);
      const top = [...b.units].filter((u) => u.exemplars.length > 0).sort((p, q) => Math.abs(q.delta ?? 0) - Math.abs(p.delta ?? 0)).slice(0, 3);
      const ex = top.flatMap((u) => u.exemplars.slice(0, 5).map((e) => [esc(u.unit), esc(e.id), esc(e.group), esc(e.direction), esc(e.text ?? '')]));
      const full = b.full ? `Full variant: Δ ${fmt(b.full.delta)} [${fmt(b.full.ci95[0])}, ${fmt(b.full.ci95[1])}], p ${fmt(b.full.p, 3)}, ${b.full.flips} flips; mean Δ item score ${fmt(b.full.score_delta, 4)} (predicted ${num(b.full.predicted, 4)}).` : '';
      return `<section><h2>Where: ${esc(b.benchmark)} <span class="muted">— ${esc(b.scorer)}, ${esc(r.unit)} units of ${esc(r.variant.name)}</span></h2>
<p class="muted">${full} Spearman ρ (predicted vs measured Δ item score) ${num(b.spearman_predicted_score_delta)}; vs Δ ${esc(b.metric)} ${num(b.spearman_predicted_measured)}.</p>
${heatmap(b)}${scatter(b)}
${table(['unit', 'Δ (leave-one-in)', 'Δ 95% CI', 'p', 'p (Holm)', 'Δ item score', 'predicted', 'Δ quality', 'Δ leave-one-out', 'CIE overlap'], rows)}
${ex.length ? `<h3>Flipped items of the top units</h3>${table(['unit', 'item', 'group', 'change', 'text'], ex, 5)}` : ''}</section>`;
    })
    .join('\n');
}

export function renderLocateReport(r: LocateResults): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Dikē locate — ${esc(r.model.dir)}</title><style>${CSS}</style></head><body>
<h1>Dikē locate</h1>
<p class="muted">Model <code>${esc(r.model.dir)}</code>, variant <code>${esc(r.variant.name)}</code>. Leave-one-in: only the unit compressed, paired with the dense model (bootstrap ${r.resamples} resamples, seed ${r.seed}; Holm across units, α = ${r.alpha}); outlined cells are significant after Holm.
Predicted: first-order change of the mean item score, g·(W_variant − W) with g the gradient of the benchmark's summed item score at the dense weights. Dikē ${esc(r.version)}.</p>
${locateSection(r)}
<h2>Data</h2>${table(['file', 'SHA-256'], r.data.map((d) => [esc(d.file), `<code>${esc(d.sha256)}</code>`]), 2)}
</body></html>
`;
}

/** An audit report with locate sections added before its data table (what `dike audit --locate` writes). */
export function withLocateSections(auditHtml: string, located: readonly LocateResults[]): string {
  const at = auditHtml.lastIndexOf('<h2>Data</h2>');
  const body = `<h1 id="locate">Where (dike locate)</h1>\n${located.map((r) => locateSection(r)).join('\n')}\n`;
  return at < 0 ? auditHtml.replace('</body>', `${body}</body>`) : auditHtml.slice(0, at) + body + auditHtml.slice(at);
}
