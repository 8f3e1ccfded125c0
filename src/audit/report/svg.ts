/**
 * Small inline-SVG chart primitives for the self-contained report (no scripts, no external files):
 * linear scales, axes with ticks, and escaping. Each chart marks its data elements with class="mark"
 * so a browser test can count what was drawn.
 */

export function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

export function fmt(x: number, digits = 2): string {
  if (!Number.isFinite(x)) return 'n/a';
  if (x !== 0 && Math.abs(x) < 10 ** -digits) return x.toExponential(1);
  return x.toFixed(digits);
}

export interface Scale {
  (v: number): number;
  domain: [number, number];
  ticks: number[];
}

/** A linear scale from [lo, hi] (padded to "nice" bounds) onto [a, b] pixels. */
export function linear(lo: number, hi: number, a: number, b: number, nTicks = 5): Scale {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) [lo, hi] = [0, 1];
  if (lo === hi) [lo, hi] = [lo - 1, hi + 1];
  const span = hi - lo;
  const step0 = span / nTicks;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= step0) ?? 10 * mag;
  const d0 = Math.floor(lo / step) * step;
  const d1 = Math.ceil(hi / step) * step;
  const f = ((v: number) => a + ((v - d0) / (d1 - d0)) * (b - a)) as Scale;
  f.domain = [d0, d1];
  f.ticks = [];
  for (let t = d0; t <= d1 + step / 2; t += step) f.ticks.push(Number(t.toPrecision(12)));
  return f;
}

export interface Frame {
  width: number;
  height: number;
  left: number;
  right: number;
  top: number;
  bottom: number;
}

export const FRAME: Frame = { width: 560, height: 300, left: 56, right: 16, top: 16, bottom: 44 };

export function axes(x: Scale, y: Scale, fr: Frame, xLabel: string, yLabel: string, xTickFmt: (v: number) => string = (v) => fmt(v, 2)): string {
  const x0 = fr.left;
  const x1 = fr.width - fr.right;
  const y0 = fr.height - fr.bottom;
  const y1 = fr.top;
  const parts: string[] = [`<g class="axes" font-size="11" fill="#444">`];
  for (const t of y.ticks) {
    const py = y(t);
    parts.push(`<line x1="${x0}" x2="${x1}" y1="${py}" y2="${py}" stroke="#e5e5e5"/>`, `<text x="${x0 - 6}" y="${py + 4}" text-anchor="end">${fmt(t, 2)}</text>`);
  }
  for (const t of x.ticks) {
    const px = x(t);
    parts.push(`<line x1="${px}" x2="${px}" y1="${y0}" y2="${y0 + 4}" stroke="#888"/>`, `<text x="${px}" y="${y0 + 16}" text-anchor="middle">${esc(xTickFmt(t))}</text>`);
  }
  parts.push(
    `<line x1="${x0}" x2="${x1}" y1="${y0}" y2="${y0}" stroke="#888"/>`,
    `<line x1="${x0}" x2="${x0}" y1="${y0}" y2="${y1}" stroke="#888"/>`,
    `<text x="${(x0 + x1) / 2}" y="${fr.height - 8}" text-anchor="middle" font-size="12">${esc(xLabel)}</text>`,
    `<text transform="translate(14 ${(y0 + y1) / 2}) rotate(-90)" text-anchor="middle" font-size="12">${esc(yLabel)}</text>`,
    '</g>',
  );
  return parts.join('');
}

/** Categorical colours (colour-blind-safe Okabe–Ito palette). */
export const PALETTE = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#F0E442', '#000000'];

/** Diverging colour for a signed value in [-1, 1]: blue (decrease) – white – red (increase). */
export function diverging(t: number): string {
  const c = Math.max(-1, Math.min(1, Number.isFinite(t) ? t : 0));
  const mix = (a: number, b: number): number => Math.round(a + (b - a) * Math.abs(c));
  return c >= 0 ? `rgb(${mix(255, 178)},${mix(255, 24)},${mix(255, 43)})` : `rgb(${mix(255, 33)},${mix(255, 102)},${mix(255, 172)})`;
}
