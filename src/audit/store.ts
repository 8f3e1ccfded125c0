/**
 * The experiment store: one SQLite file, `<out>/dike.sqlite`, that makes an audit resumable. Every
 * finished benchmark run is committed as it completes, keyed by content hashes, so rerunning the
 * same audit after a crash or `kill -9` recomputes nothing that finished, and a changed input
 * (model weights or files, recipe, data file, option, tool version) gives a new key: recomputed,
 * never silently reused.
 *
 * File: WAL journal, `synchronous = FULL` (a commit survives power loss, not only a killed process),
 * foreign keys on, `busy_timeout` 5 s. One writing process per store.
 *
 *   schema_version(version)                    one row; a file from a newer Dikē is refused
 *   models(id, key UNIQUE, role 'dense'|'variant', name, dir,
 *          weights_sha256   SHA-256 of model.safetensors (= compression.json's weights_sha256);
 *                           for a sharded checkpoint, of the list "shard-name sha256" lines
 *          files_sha256     the same over the other files that change scores: config, tokenizer,
 *                           quantization sidecar
 *          recipe_json, recipe_sha256 (NULL for a model without a recipe), created_at)
 *   runs(id, key UNIQUE, model_id → models, benchmark, scorer,
 *        data_sha256        combined hash of the dataset's files (see hashDatasetFiles)
 *        options_json       seed, resamples, limit, execution mode, … (canonical JSON)
 *        tool_version, status 'running'|'done', started_at, finished_at,
 *        result_json)       the BenchmarkResult with `items: []` (items live in `items`)
 *   items(run_id → runs ON DELETE CASCADE, item_id, ord, grp, score REAL, score_special,
 *         has_outcome, outcome INTEGER NULL, detail_json; PRIMARY KEY (run_id, item_id))
 *
 * Keys. modelKey = SHA-256 of canonical JSON {role, weights, files, recipe}; runKey = SHA-256 of
 * canonical JSON {model key, benchmark, scorer, data hash, options, tool version}. Canonical JSON
 * sorts object keys and drops undefined members, so option order never matters; non-finite numbers
 * are refused. Names and directories are labels, not part of any key: a moved model keeps its runs.
 *
 * Life of a run: `findRun(key)` → a done result, or undefined → `beginRun(…)` → the benchmark runs →
 * `finishRun(id, result)` writes the items and the result and marks the run done in one transaction.
 * `saveItems` may be called in between to commit items in chunks as they are scored.
 *
 * Interrupted runs are restarted, not resumed: a run left `running` by a dead process keeps its row
 * (id and key) but `beginRun` deletes its saved items and starts it over. Benchmarks compute their
 * aggregate statistics (bootstrap CIs over all items) in one call, so a partial item list cannot be fed
 * back to them; restarting is simple and cannot mix items of two processes. A run is only ever
 * reported by `findRun` once `finishRun` has committed, so a reader never sees half a run.
 *
 * Exactness. Items and results come back exactly as given: scores bit-for-bit (SQLite's REAL keeps
 * every double except NaN and −0, which `score_special` records), `outcome` absent vs null vs 0/1,
 * `detail` absent vs present, and NaN/±Infinity/−0 inside result and detail JSON (written as
 * `{"$num": "NaN"}` etc., which no result contains otherwise). Items come back in their original order.
 */
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { sha256FileStreamed, sha256Text } from '../util/hash.js';
import path from 'node:path';
import Database from 'better-sqlite3';
import { DikeError } from '../errors.js';
import { weightFilesOf } from '../model/checkpoint.js';
import { dataFilePath } from '../measure/data.js';
import type { BenchmarkResult, DataFileRecord, Dataset, ItemScore } from '../measure/types.js';
import { dikeVersion } from '../version.js';

export const STORE_FILE = 'dike.sqlite';
export const SCHEMA_VERSION = 1;

/** The store file of an audit output directory. */
export function storePath(outDir: string): string {
  return path.join(outDir, STORE_FILE);
}

// ---- hashing ----------------------------------------------------------------------------------

/** JSON with object keys sorted recursively; refuses what JSON cannot carry faithfully. */
export function canonicalJson(value: unknown): string {
  const walk = (v: unknown, where: string): unknown => {
    if (v === null || typeof v === 'string' || typeof v === 'boolean') return v;
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) throw new DikeError('', where || 'key', `cannot hash a non-finite number (${v})`);
      return v;
    }
    if (Array.isArray(v)) return v.map((x, i) => walk(x === undefined ? null : x, `${where}[${i}]`));
    if (typeof v === 'object') {
      const proto = Object.getPrototypeOf(v);
      if (proto !== Object.prototype && proto !== null) throw new DikeError('', where || 'key', 'cannot hash a non-plain object');
      const out: Record<string, unknown> = {};
      for (const k of Object.keys(v).sort()) {
        const x = (v as Record<string, unknown>)[k];
        if (x !== undefined) out[k] = walk(x, where ? `${where}.${k}` : k);
      }
      return out;
    }
    throw new DikeError('', where || 'key', `cannot hash a ${typeof v}`);
  };
  return JSON.stringify(walk(value, ''));
}

/** One hash over named hashes: SHA-256 of the sorted lines "name sha256\n". */
export function combineHashes(records: readonly { file: string; sha256: string }[]): string {
  const lines = records.map((r) => `${r.file} ${r.sha256}\n`).sort();
  return sha256Text(lines.join(''));
}

/** Files besides the weights that change what a model scores. */
const SCORE_AFFECTING_FILES = [
  'config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json',
  'added_tokens.json', 'vocab.txt', 'vocab.json', 'merges.txt', 'tokenizer.model', 'quantization.safetensors',
];

export interface ModelHashes {
  /** SHA-256 of model.safetensors, or combineHashes over the shards. */
  weightsSha256: string;
  /** combineHashes over config, tokenizer and quantization files present in the directory. */
  filesSha256: string;
}

/** Content hashes of a Hugging Face checkpoint directory. */
export function hashModelDir(dir: string): ModelHashes {
  const { files } = weightFilesOf(dir);
  const weights = files.map((f) => ({ file: path.basename(f), sha256: sha256FileStreamed(f) }));
  const weightsSha256 = files.length === 1 && path.basename(files[0]!) === 'model.safetensors' ? weights[0]!.sha256 : combineHashes(weights);
  const others = SCORE_AFFECTING_FILES.filter((n) => existsSync(path.join(dir, n))).map((n) => ({ file: n, sha256: sha256FileStreamed(path.join(dir, n)) }));
  return { weightsSha256, filesSha256: combineHashes(others) };
}

/** Combined hash of the data files a run read (a benchmark result's `data`). */
export function hashDataRecords(records: readonly DataFileRecord[]): string {
  return combineHashes(records);
}

/**
 * Combined hash of every file a dataset declares, as found under the data directory (a missing file
 * counts as "absent", so adding it later changes the hash). Computed before a run, to look it up.
 */
export function hashDatasetFiles(dataDir: string, dataset: Dataset): string {
  return combineHashes(
    dataset.files.map((f) => {
      const p = dataFilePath(dataDir, dataset, f);
      return { file: f.path, sha256: existsSync(p) && statSync(p).isFile() ? sha256FileStreamed(p) : 'absent' };
    }),
  );
}

// ---- keys -------------------------------------------------------------------------------------

export type ModelRole = 'dense' | 'variant';

export interface ModelInput extends ModelHashes {
  role: ModelRole;
  /** A label for reports (e.g. "magnitude-0.5"); not part of the key. */
  name: string;
  /** Where the model was read from; not part of the key. */
  dir: string;
  /** The recipe that produced the model (JSON-serialisable), or null for the dense model. */
  recipe: unknown;
}

/** What a run's result depends on besides the model. Extra members are allowed and hashed. */
export interface RunOptions {
  seed: number;
  resamples: number;
  /** Only the first `limit` items; undefined = all. */
  limit?: number | undefined;
  /** Execution mode (e.g. "fp32", "int8-kernels", "cpu"). */
  mode?: string | undefined;
  [extra: string]: unknown;
}

export interface RunInput {
  /** Key of the model (`modelKey` / `ModelRecord.key`). */
  modelKey: string;
  benchmark: string;
  scorer: string;
  /** `hashDatasetFiles` (or `hashDataRecords`) of the data the run reads. */
  dataSha256: string;
  options: RunOptions;
  /** Defaults to dikeVersion(). */
  toolVersion?: string;
}

function recipeHash(recipe: unknown): { json: string; sha256: string } | null {
  if (recipe === null || recipe === undefined) return null;
  const json = canonicalJson(recipe);
  return { json, sha256: sha256Text(json) };
}

export function modelKey(m: Pick<ModelInput, 'role' | 'weightsSha256' | 'filesSha256' | 'recipe'>): string {
  return sha256Text(canonicalJson({ kind: 'dike.model/1', role: m.role, weights: m.weightsSha256, files: m.filesSha256, recipe: recipeHash(m.recipe)?.sha256 ?? null }));
}

export function runKey(r: RunInput): string {
  return sha256Text(
    canonicalJson({
      kind: 'dike.run/1',
      model: r.modelKey,
      benchmark: r.benchmark,
      scorer: r.scorer,
      data: r.dataSha256,
      options: r.options,
      tool: r.toolVersion ?? dikeVersion(),
    }),
  );
}

// ---- exact JSON for results and item details ----------------------------------------------------

const NUM_TAG = '$num';

function encodeJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => {
    if (typeof v !== 'number') return v;
    if (Number.isNaN(v)) return { [NUM_TAG]: 'NaN' };
    if (v === Infinity) return { [NUM_TAG]: 'Infinity' };
    if (v === -Infinity) return { [NUM_TAG]: '-Infinity' };
    if (Object.is(v, -0)) return { [NUM_TAG]: '-0' };
    return v;
  });
}

function decodeJson(text: string): unknown {
  return JSON.parse(text, (_k, v: unknown) => {
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) {
      const keys = Object.keys(v);
      if (keys.length === 1 && keys[0] === NUM_TAG) {
        const s = (v as Record<string, unknown>)[NUM_TAG];
        if (s === 'NaN') return NaN;
        if (s === 'Infinity') return Infinity;
        if (s === '-Infinity') return -Infinity;
        if (s === '-0') return -0;
      }
    }
    return v;
  });
}

// ---- records ----------------------------------------------------------------------------------

export interface ModelRecord extends ModelInput {
  id: number;
  key: string;
  recipeSha256: string | null;
  createdAt: string;
}

export type RunStatus = 'running' | 'done';

export interface RunSummary {
  id: number;
  key: string;
  modelId: number;
  benchmark: string;
  scorer: string;
  dataSha256: string;
  options: RunOptions;
  toolVersion: string;
  status: RunStatus;
  startedAt: string;
  finishedAt: string | null;
  /** Items committed so far. */
  items: number;
}

export interface StoredRun extends Omit<RunSummary, 'items' | 'status' | 'finishedAt'> {
  status: 'done';
  finishedAt: string;
  /** The result as finished, items included, in their original order. */
  result: BenchmarkResult;
}

export interface RunHandle {
  id: number;
  key: string;
  /** True when a run left `running` by an earlier process was found and started over. */
  restarted: boolean;
}

export interface Store {
  readonly path: string;
  /** Insert the model, or return the existing row with the same key (its name and dir updated). */
  upsertModel(m: ModelInput): ModelRecord;
  getModel(id: number): ModelRecord | undefined;
  /** The finished run with this key, items reconstructed; undefined when absent or unfinished. */
  findRun(key: string): StoredRun | undefined;
  /** Start a run (or restart one a dead process left `running`). Refuses a run that is done. */
  beginRun(r: Omit<RunInput, 'modelKey'> & { modelId: number }): RunHandle;
  /** Commit items of a running run, in one transaction; call repeatedly to save in chunks. */
  saveItems(runId: number, items: readonly ItemScore[]): void;
  /** In one transaction: replace the run's items with result.items, store the result, mark done. */
  finishRun(runId: number, result: BenchmarkResult): void;
  listRuns(filter?: { status?: RunStatus; modelId?: number }): RunSummary[];
  /** `PRAGMA integrity_check`: 'ok' or the problems found. */
  integrityCheck(): string;
  close(): void;
}

// ---- schema -----------------------------------------------------------------------------------

const SCHEMA = `
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE models (
  id             INTEGER PRIMARY KEY,
  key            TEXT NOT NULL UNIQUE,
  role           TEXT NOT NULL CHECK (role IN ('dense', 'variant')),
  name           TEXT NOT NULL,
  dir            TEXT NOT NULL,
  weights_sha256 TEXT NOT NULL,
  files_sha256   TEXT NOT NULL,
  recipe_json    TEXT,
  recipe_sha256  TEXT,
  created_at     TEXT NOT NULL
);
CREATE TABLE runs (
  id           INTEGER PRIMARY KEY,
  key          TEXT NOT NULL UNIQUE,
  model_id     INTEGER NOT NULL REFERENCES models(id),
  benchmark    TEXT NOT NULL,
  scorer       TEXT NOT NULL,
  data_sha256  TEXT NOT NULL,
  options_json TEXT NOT NULL,
  tool_version TEXT NOT NULL,
  status       TEXT NOT NULL CHECK (status IN ('running', 'done')),
  started_at   TEXT NOT NULL,
  finished_at  TEXT,
  result_json  TEXT,
  CHECK ((status = 'done') = (result_json IS NOT NULL AND finished_at IS NOT NULL))
);
CREATE INDEX runs_model ON runs(model_id);
CREATE TABLE items (
  run_id        INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  item_id       TEXT NOT NULL,
  ord           INTEGER NOT NULL,
  grp           TEXT NOT NULL,
  score         REAL,
  score_special TEXT CHECK (score_special IN ('NaN', '-0')),
  has_outcome   INTEGER NOT NULL CHECK (has_outcome IN (0, 1)),
  outcome       INTEGER CHECK (outcome IN (0, 1)),
  detail_json   TEXT,
  PRIMARY KEY (run_id, item_id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX items_order ON items(run_id, ord);
`;

interface ModelRow {
  id: number;
  key: string;
  role: ModelRole;
  name: string;
  dir: string;
  weights_sha256: string;
  files_sha256: string;
  recipe_json: string | null;
  recipe_sha256: string | null;
  created_at: string;
}

interface RunRow {
  id: number;
  key: string;
  model_id: number;
  benchmark: string;
  scorer: string;
  data_sha256: string;
  options_json: string;
  tool_version: string;
  status: RunStatus;
  started_at: string;
  finished_at: string | null;
  result_json: string | null;
}

interface ItemRow {
  item_id: string;
  grp: string;
  score: number | null;
  score_special: 'NaN' | '-0' | null;
  has_outcome: 0 | 1;
  outcome: 0 | 1 | null;
  detail_json: string | null;
}

function modelRecord(r: ModelRow): ModelRecord {
  return {
    id: r.id,
    key: r.key,
    role: r.role,
    name: r.name,
    dir: r.dir,
    weightsSha256: r.weights_sha256,
    filesSha256: r.files_sha256,
    recipe: r.recipe_json === null ? null : JSON.parse(r.recipe_json),
    recipeSha256: r.recipe_sha256,
    createdAt: r.created_at,
  };
}

function itemRow(runId: number, ord: number, it: ItemScore) {
  if (typeof it.id !== 'string' || typeof it.group !== 'string' || typeof it.score !== 'number') {
    throw new DikeError('', `item ${JSON.stringify(it.id)}`, 'an item needs a string id and group and a numeric score');
  }
  const special = Number.isNaN(it.score) ? 'NaN' : Object.is(it.score, -0) ? '-0' : null;
  const hasOutcome = 'outcome' in it && it.outcome !== undefined;
  const outcome = hasOutcome ? it.outcome : null;
  if (outcome !== null && outcome !== 0 && outcome !== 1) throw new DikeError('', `item ${it.id}`, `outcome must be 0, 1 or null, got ${String(outcome)}`);
  return {
    run_id: runId,
    item_id: it.id,
    ord,
    grp: it.group,
    score: special === null ? it.score : special === '-0' ? 0 : null,
    score_special: special,
    has_outcome: hasOutcome ? 1 : 0,
    outcome,
    detail_json: it.detail === undefined ? null : encodeJson(it.detail),
  };
}

function itemScore(r: ItemRow): ItemScore {
  const score = r.score_special === 'NaN' ? NaN : r.score_special === '-0' ? -0 : r.score!;
  const it: ItemScore = { id: r.item_id, group: r.grp, score };
  if (r.has_outcome === 1) it.outcome = r.outcome;
  if (r.detail_json !== null) it.detail = decodeJson(r.detail_json) as ItemScore['detail'] & object;
  return it;
}

const now = (): string => new Date().toISOString();

// ---- the store --------------------------------------------------------------------------------

/** Open (creating if needed, with its directory) the store at `file`. */
export function openStore(file: string): Store {
  mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  let db: Database.Database;
  try {
    db = new Database(file);
  } catch (e) {
    throw new DikeError(file, '', `cannot open the experiment store: ${(e as Error).message}`);
  }
  try {
    db.pragma('busy_timeout = 5000');
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    db.pragma('foreign_keys = ON');
    db.transaction(() => {
      const has = db.prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'schema_version'").get();
      if (has === undefined) {
        const tables = db.prepare("SELECT count(*) AS n FROM sqlite_schema WHERE type = 'table'").get() as { n: number };
        if (tables.n > 0) throw new DikeError(file, '', 'an SQLite file that is not a Dikē experiment store (no schema_version table)');
        db.exec(SCHEMA);
        db.prepare('INSERT INTO schema_version (version) VALUES (?)').run(SCHEMA_VERSION);
        return;
      }
      const v = db.prepare('SELECT max(version) AS v FROM schema_version').get() as { v: number | null };
      if (v.v !== SCHEMA_VERSION) {
        throw new DikeError(file, 'schema_version', `store schema version ${v.v} is not ${SCHEMA_VERSION}, the version this Dikē reads${(v.v ?? 0) > SCHEMA_VERSION ? ' (written by a newer Dikē)' : ''}; use a new --out directory`);
      }
    }).immediate();
  } catch (e) {
    db.close();
    if (e instanceof DikeError) throw e;
    throw new DikeError(file, '', `cannot open the experiment store: ${(e as Error).message}`);
  }

  const q = {
    modelByKey: db.prepare<[string], ModelRow>('SELECT * FROM models WHERE key = ?'),
    modelById: db.prepare<[number], ModelRow>('SELECT * FROM models WHERE id = ?'),
    insertModel: db.prepare(
      `INSERT INTO models (key, role, name, dir, weights_sha256, files_sha256, recipe_json, recipe_sha256, created_at)
       VALUES (@key, @role, @name, @dir, @weights_sha256, @files_sha256, @recipe_json, @recipe_sha256, @created_at)`,
    ),
    relabelModel: db.prepare('UPDATE models SET name = ?, dir = ? WHERE id = ?'),
    runByKey: db.prepare<[string], RunRow>('SELECT * FROM runs WHERE key = ?'),
    runById: db.prepare<[number], RunRow>('SELECT * FROM runs WHERE id = ?'),
    insertRun: db.prepare(
      `INSERT INTO runs (key, model_id, benchmark, scorer, data_sha256, options_json, tool_version, status, started_at)
       VALUES (@key, @model_id, @benchmark, @scorer, @data_sha256, @options_json, @tool_version, 'running', @started_at)`,
    ),
    restartRun: db.prepare("UPDATE runs SET status = 'running', started_at = ?, finished_at = NULL, result_json = NULL WHERE id = ?"),
    finishRun: db.prepare("UPDATE runs SET status = 'done', finished_at = ?, result_json = ? WHERE id = ?"),
    deleteItems: db.prepare('DELETE FROM items WHERE run_id = ?'),
    nextOrd: db.prepare<[number], { n: number }>('SELECT coalesce(max(ord) + 1, 0) AS n FROM items WHERE run_id = ?'),
    insertItem: db.prepare(
      `INSERT INTO items (run_id, item_id, ord, grp, score, score_special, has_outcome, outcome, detail_json)
       VALUES (@run_id, @item_id, @ord, @grp, @score, @score_special, @has_outcome, @outcome, @detail_json)`,
    ),
    items: db.prepare<[number], ItemRow>('SELECT item_id, grp, score, score_special, has_outcome, outcome, detail_json FROM items WHERE run_id = ? ORDER BY ord'),
    countItems: db.prepare<[number], { n: number }>('SELECT count(*) AS n FROM items WHERE run_id = ?'),
  };

  const runningRun = (runId: number, what: string): RunRow => {
    const r = q.runById.get(runId);
    if (r === undefined) throw new DikeError(file, `run ${runId}`, `${what}: no such run`);
    if (r.status !== 'running') throw new DikeError(file, `run ${runId}`, `${what}: the run is already done`);
    return r;
  };

  const insertItems = (runId: number, first: number, items: readonly ItemScore[]): void => {
    let ord = first;
    for (const it of items) {
      try {
        q.insertItem.run(itemRow(runId, ord++, it));
      } catch (e) {
        if ((e as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY') throw new DikeError(file, `run ${runId}`, `item id "${it.id}" saved twice`);
        throw e;
      }
    }
  };

  const summary = (r: RunRow) => ({
    id: r.id,
    key: r.key,
    modelId: r.model_id,
    benchmark: r.benchmark,
    scorer: r.scorer,
    dataSha256: r.data_sha256,
    options: JSON.parse(r.options_json) as RunOptions,
    toolVersion: r.tool_version,
    startedAt: r.started_at,
  });

  const store: Store = {
    path: file,

    upsertModel(m) {
      const key = modelKey(m);
      return db
        .transaction((): ModelRecord => {
          const found = q.modelByKey.get(key);
          if (found !== undefined) {
            if (found.name !== m.name || found.dir !== m.dir) q.relabelModel.run(m.name, m.dir, found.id);
            return modelRecord(q.modelById.get(found.id)!);
          }
          const recipe = recipeHash(m.recipe);
          const info = q.insertModel.run({
            key,
            role: m.role,
            name: m.name,
            dir: m.dir,
            weights_sha256: m.weightsSha256,
            files_sha256: m.filesSha256,
            recipe_json: recipe?.json ?? null,
            recipe_sha256: recipe?.sha256 ?? null,
            created_at: now(),
          });
          return modelRecord(q.modelById.get(Number(info.lastInsertRowid))!);
        })
        .immediate();
    },

    getModel(id) {
      const r = q.modelById.get(id);
      return r === undefined ? undefined : modelRecord(r);
    },

    findRun(key) {
      return db.transaction((): StoredRun | undefined => {
        const r = q.runByKey.get(key);
        if (r === undefined || r.status !== 'done') return undefined;
        const result = decodeJson(r.result_json!) as BenchmarkResult;
        result.items = q.items.all(r.id).map(itemScore);
        return { ...summary(r), status: 'done', finishedAt: r.finished_at!, result };
      })();
    },

    beginRun(r) {
      return db
        .transaction((): RunHandle => {
          const model = q.modelById.get(r.modelId);
          if (model === undefined) throw new DikeError(file, `model ${r.modelId}`, 'beginRun: no such model');
          const key = runKey({ ...r, modelKey: model.key });
          const existing = q.runByKey.get(key);
          if (existing !== undefined) {
            if (existing.status === 'done') throw new DikeError(file, `run ${existing.id}`, `${r.benchmark} on ${model.name} is already done (look it up with findRun)`);
            // Left running by a process that died: start over, keeping the row.
            q.deleteItems.run(existing.id);
            q.restartRun.run(now(), existing.id);
            return { id: existing.id, key, restarted: true };
          }
          const info = q.insertRun.run({
            key,
            model_id: model.id,
            benchmark: r.benchmark,
            scorer: r.scorer,
            data_sha256: r.dataSha256,
            options_json: canonicalJson(r.options),
            tool_version: r.toolVersion ?? dikeVersion(),
            started_at: now(),
          });
          return { id: Number(info.lastInsertRowid), key, restarted: false };
        })
        .immediate();
    },

    saveItems(runId, items) {
      db.transaction(() => {
        runningRun(runId, 'saveItems');
        insertItems(runId, q.nextOrd.get(runId)!.n, items);
      }).immediate();
    },

    finishRun(runId, result) {
      db.transaction(() => {
        const r = runningRun(runId, 'finishRun');
        if (result.benchmark !== r.benchmark || result.scorer !== r.scorer) {
          throw new DikeError(file, `run ${runId}`, `finishRun: result is ${result.benchmark}/${result.scorer}, the run is ${r.benchmark}/${r.scorer}`);
        }
        q.deleteItems.run(runId);
        insertItems(runId, 0, result.items);
        // Items live in their table; `items: []` keeps the key's place so the result reads back in order.
        q.finishRun.run(now(), encodeJson({ ...result, items: [] }), runId);
      }).immediate();
    },

    listRuns(filter = {}) {
      const where: string[] = [];
      const args: (string | number)[] = [];
      if (filter.status !== undefined) (where.push('status = ?'), args.push(filter.status));
      if (filter.modelId !== undefined) (where.push('model_id = ?'), args.push(filter.modelId));
      const rows = db.prepare<(string | number)[], RunRow>(`SELECT * FROM runs${where.length ? ' WHERE ' + where.join(' AND ') : ''} ORDER BY id`).all(...args);
      return rows.map((r) => ({ ...summary(r), status: r.status, finishedAt: r.finished_at, items: q.countItems.get(r.id)!.n }));
    },

    integrityCheck() {
      const rows = db.pragma('integrity_check') as { integrity_check: string }[];
      return rows.map((r) => r.integrity_check).join('\n');
    },

    close() {
      if (db.open) db.close();
    },
  };
  return store;
}
