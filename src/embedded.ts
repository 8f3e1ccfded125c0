/**
 * What ships inside Dikē so that its main command runs offline on a fresh clone: its own small models
 * (trained with `dike train` on public-domain text; recipes in models/recipes/) and the CrowS-Pairs CSV
 * (CC BY-SA 4.0, data/crows-pairs/LICENSE.md). Everything else comes from a data directory.
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

/** The embedded data directory (CrowS-Pairs only). */
export function embeddedDataDir(): string {
  return path.join(packageRoot(), 'data');
}
