/**
 * The audit's results: plain JSON (results.json) from which the HTML report is drawn. Every number
 * a reader sees in the report is in here, with the seeds, versions and data checksums behind it.
 */
import type { DataFileRecord, ScoreCI } from '../measure/types.js';

export interface ModelEntry {
  /** "dense" or the variant's name (e.g. "magnitude-0.5"). */
  name: string;
  dir: string;
  /** Method spec or recipe steps that produced it ("" for the dense model). */
  spec: string;
  /** Sweep family and level (e.g. method "magnitude", level 0.5); level 0 = dense. */
  family?: string;
  level?: number;
  weightsSha256: string;
  quality?: { kind: string; value: number; tokens: number; /** StereoSet's language-model score, when StereoSet was run. */ lms?: number };
  /** Deployed size (src/audit/size.ts: 16-bit values, quantized and pruned matrices as stored). */
  size?: { bytes: number; bitsPerParam: number };
  /** The data this model saw besides its base training: what compressed it, or what built it (testbeds). */
  saw?: DataSeen;
}

/** Data a model saw: calibration text, debiasing pairs, testbed training corpora. */
export interface DataSeen {
  calibration?: { file: string; sha256: string };
  /** Sentence pairs of a debiasing step (fair-gptq and others): the source as given and its content hash. */
  pairs?: { step: number; method: string; source: string; sha256: string }[];
  /** A testbed's fine-tuning corpora (testbed.json) and the benchmarks whose items they contain. */
  training?: { testbed: string; corpora: Record<string, string>; benchmarks: string[] };
}

/** A paired comparison of one variant with the dense model on one benchmark group. */
export interface PairedCell {
  score: ScoreCI;
  /** score(variant) − score(dense), with a paired bootstrap 95% interval (items resampled jointly). */
  delta: number;
  deltaCi95: [number, number];
  /** Paired test: exact McNemar on binary outcomes, sign-flip permutation on continuous scores. */
  test: 'mcnemar' | 'permutation' | 'none';
  p: number;
  /** Holm–Bonferroni across the groups of the benchmark (for this variant). */
  pHolm: number;
  significant: boolean;
}

export interface FlipGroup {
  group: string;
  items: number;
  flips: number;
  flipRate: number;
  /** Share of all flips that fall in this group vs the group's share of items. */
  shareOfFlips: number;
  shareOfItems: number;
  fisherP: number;
  fisherPHolm: number;
}

export interface Exemplar {
  id: string;
  group: string;
  direction: 'became-biased' | 'became-unbiased';
  denseScore: number;
  variantScore: number;
  text?: string;
}

export interface VariantComparison {
  variant: string;
  overall: PairedCell;
  groups: Record<string, PairedCell>;
  flips: { total: number; rate: number; becameBiased: number; becameUnbiased: number; byGroup: FlipGroup[] };
  exemplars: Exemplar[];
}

export interface BenchmarkAudit {
  benchmark: string;
  scorer: string;
  metric: string;
  /** The score that means "no bias" (50 for preference rates, 0 for effect sizes and bias scores). */
  neutral: number;
  dense: { overall: ScoreCI; groups: Record<string, ScoreCI> };
  variants: VariantComparison[];
}

export interface AuditResults {
  tool: 'dike';
  version: string;
  seed: number;
  resamples: number;
  alpha: number;
  dense: ModelEntry;
  variants: ModelEntry[];
  benchmarks: BenchmarkAudit[];
  data: DataFileRecord[];
  /** One line per overlap between what a model saw and what this audit scores (also printed). */
  warnings?: string[];
}
