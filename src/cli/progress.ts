/** A progress bar with ETA on stderr; silent when --quiet or when stderr is not a terminal. */
export class Progress {
  private start = Date.now();
  private lastDraw = 0;
  private label = '';

  constructor(private readonly enabled: boolean) {}

  static forCli(quiet: boolean | undefined): Progress {
    return new Progress(!quiet && process.stderr.isTTY === true);
  }

  update(label: string, done: number, total: number): void {
    if (!this.enabled) return;
    if (label !== this.label) {
      this.label = label;
      this.start = Date.now();
    }
    const now = Date.now();
    if (done < total && now - this.lastDraw < 100) return;
    this.lastDraw = now;
    const frac = total > 0 ? done / total : 1;
    const width = 24;
    const filled = Math.round(frac * width);
    const elapsed = (now - this.start) / 1000;
    const eta = done > 0 ? (elapsed * (total - done)) / done : NaN;
    const bar = '█'.repeat(filled) + '░'.repeat(width - filled);
    const line = `${label} ${bar} ${(100 * frac).toFixed(0).padStart(3)}% ${done}/${total} ${done < total ? `ETA ${clock(eta)}` : `in ${clock(elapsed)}`}`;
    process.stderr.write(`\r\x1b[2K${line}`);
    if (done >= total) process.stderr.write('\n');
  }
}

function clock(seconds: number): string {
  if (!Number.isFinite(seconds)) return '--:--';
  const s = Math.round(seconds);
  const m = Math.floor(s / 60);
  return `${m}:${String(s % 60).padStart(2, '0')}`;
}
