/**
 * What ships inside Dikē so that its main command runs offline on a fresh clone: its own small models
 * (trained with `dike train` on public-domain text; recipes in models/recipes/), the CrowS-Pairs CSV and
 * StereoSet intrasentence dev (both CC BY-SA 4.0, LICENSE.md beside each), and an excerpt of the
 * public-domain lm_corpus (data/lm_corpus/SOURCE.md) for calibration and the held-out quality proxy.
 * Everything else comes from a data directory.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package root (this file is dist/src/embedded.js). */
export function packageRoot(): string {
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
}

export const EMBEDDED_MODELS = ['dike-bert-mini', 'dike-gpt2-mini'] as const;
export type EmbeddedModel = (typeof EMBEDDED_MODELS)[number];

/** The model a command uses when none is given: the masked LM that CrowS-Pairs' reference metric scores. */
export const DEFAULT_MODEL: EmbeddedModel = 'dike-bert-mini';

export function embeddedModelDir(name: EmbeddedModel): string {
  return path.join(packageRoot(), 'models', name);
}

/**
 * A model argument: an existing directory as given; the name of an embedded model; absent → the
 * default embedded model. (A directory with an embedded model's name wins, as the user meant it.)
 */
export function resolveModel(arg: string | undefined): { dir: string; embedded: boolean } {
  if (arg === undefined) return { dir: embeddedModelDir(DEFAULT_MODEL), embedded: true };
  if (!existsSync(arg) && (EMBEDDED_MODELS as readonly string[]).includes(arg)) return { dir: embeddedModelDir(arg as EmbeddedModel), embedded: true };
  return { dir: arg, embedded: false };
}

/** The embedded data directory (CrowS-Pairs, StereoSet intrasentence, the lm_corpus excerpt). */
export function embeddedDataDir(): string {
  return path.join(packageRoot(), 'data');
}

/**
 * A split of lm_corpus (train: calibration text; valid: held-out quality text): the data directory's
 * own `lm_corpus/<split>.txt` when it has one, else the excerpt shipped in data/lm_corpus/.
 * `fallback` is true when a data directory was given but lacks the file (callers say so).
 */
export function corpusFile(split: 'train' | 'valid', dataDir?: string): { file: string; fallback: boolean } {
  const embedded = path.join(embeddedDataDir(), 'lm_corpus', `${split}.txt`);
  if (dataDir === undefined) return { file: embedded, fallback: false };
  const own = path.join(dataDir, 'lm_corpus', `${split}.txt`);
  if (existsSync(own)) return { file: path.resolve(own), fallback: false };
  return { file: embedded, fallback: true };
}
