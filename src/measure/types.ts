/**
 * A benchmark is one declarative unit: a name, the dataset it reads, its scorers, and one function
 * that turns a model into a BenchmarkResult. Results are plain JSON; every item keeps its id so that
 * a dense and a compressed run can be paired item by item.
 */
import type { Checkpoint } from '../model/checkpoint.js';
import type { ModelRunner } from '../runtime/session.js';
import type { Task } from '../model/arch/types.js';

/** A score with its 95% bootstrap confidence interval and item count. */
export interface ScoreCI {
  score: number;
  ci95: [number, number];
  n: number;
}

/** One item's contribution, kept for pairing and for compression-identified exemplars. */
export interface ItemScore {
  /** Stable id within the benchmark (e.g. the CSV row index, the StereoSet sentence id). */
  id: string;
  /** The group the item belongs to (bias type, domain, category, test). */
  group: string;
  /** The item's continuous score (e.g. a log-likelihood difference). */
  score: number;
  /** Binary outcome where the benchmark has one (1 = biased choice), null when neutral/undefined. */
  outcome?: 0 | 1 | null;
  /** Benchmark-specific numbers for the item (sentence scores, token counts, …). */
  detail?: Record<string, number | string | boolean | null>;
}

export interface DataFileRecord {
  /** Path relative to the data directory. */
  file: string;
  sha256: string;
}

export interface BenchmarkResult extends ScoreCI {
  benchmark: string;
  scorer: string;
  /** What `score` is, in words (e.g. "% pairs preferring the more stereotypical sentence"). */
  metric: string;
  groups: Record<string, ScoreCI>;
  /** Further named numbers (stereotype score, LMS, ICAT, …), each with its CI where meaningful. */
  extra: Record<string, ScoreCI | number>;
  items: ItemScore[];
  data: DataFileRecord[];
  seed: number;
  resamples: number;
}

/** A data file the benchmark reads, with its canonical download and checksum. */
export interface DataFile {
  /** Path relative to the dataset folder. */
  path: string;
  url: string;
  /** SHA-256 of the file; '' when unknown (then `gitBlob` must be given). */
  sha256: string;
  /** Git blob id (SHA-1 of "blob <size>\0" + content), for files whose SHA-256 is not recorded. */
  gitBlob?: string;
  /** Size in bytes; 0 when unknown. */
  bytes: number;
}

/** A dataset: a folder of files under the data directory (e.g. `crows-pairs/`). */
export interface Dataset {
  name: string;
  folder: string;
  license: string;
  citation: string;
  homepage: string;
  files: readonly DataFile[];
}

export interface MeasureOptions {
  scorer: string;
  seed: number;
  resamples: number;
  /** Use only the first `limit` items (for tests and quick looks); undefined = all. */
  limit?: number;
  /**
   * Only the items at even or odd positions (0-based, file order), before `limit`: the two held-out
   * halves of a benchmark whose `halves` is true (`crows-pairs@even`, `crows-pairs@odd`).
   */
  half?: 'even' | 'odd';
  /** Called as work completes: done and total in the benchmark's own units. */
  progress?: (done: number, total: number) => void;
}

export interface MeasureContext {
  ckpt: Checkpoint;
  runner: ModelRunner;
  /** Root data directory (holds one folder per dataset). */
  dataDir: string;
}

export interface ScorerSpec {
  /** The tasks (model kinds) this scorer applies to. */
  tasks: readonly Task[];
  description: string;
}

/**
 * One sequence's share of an item score written as token log-probabilities: the score gains
 * weight · Σ_k log P(targets[k] | the model's output at rows[k]) for the input `ids`.
 * Masked LMs: `ids` has the scored position masked, one row; causal LMs: BOS + text, row k predicts k+1.
 */
export interface ScoreTerm {
  ids: number[];
  rows: number[];
  targets: number[];
  weight: number;
}

/**
 * An item's score as a differentiable sum of ScoreTerms (before any rounding or thresholding):
 * score = Σ weight · Σ_rows log P. When the score is a nonlinear function f of the log-probabilities
 * (StereoSet's mean of probabilities), the item is `linearized`: each weight is ∂f/∂log P at the
 * weights the objective was built for, so Σ weight · ∇log P is the score's exact gradient there, but
 * Σ weight · log P is not the score.
 */
export interface ItemObjective {
  id: string;
  group: string;
  terms: ScoreTerm[];
  linearized?: boolean;
}

export interface Benchmark {
  name: string;
  description: string;
  /** Paper and reference code whose definition this implements. */
  reference: string;
  dataset: Dataset;
  scorers: Readonly<Record<string, ScorerSpec>>;
  /**
   * What the audit compares item by item: the rate of biased outcomes (×100; the default when every
   * item has a 0/1 outcome), the mean item score, or the mean absolute item score (effect sizes).
   */
  auditStatistic?: 'outcome-rate' | 'mean-score' | 'mean-abs-score';
  /** Whether `<name>@even` / `<name>@odd` (MeasureOptions.half) are offered. */
  halves?: boolean;
  /** The scorer used when none is named, for a model of this task. */
  defaultScorer(task: Task): string | undefined;
  run(ctx: MeasureContext, opts: MeasureOptions): Promise<BenchmarkResult>;
  /**
   * The benchmark's own continuous per-item score (ItemScore.score) as a weighted sum of token
   * log-probabilities (exact, or linearized at the runner's weights), so that it can be
   * differentiated with respect to the weights; absent when the score is not a function of token
   * log-probabilities.
   */
  objective?(ctx: MeasureContext, opts: Pick<MeasureOptions, 'scorer' | 'limit' | 'half'>): Promise<ItemObjective[]>;
}
