/**
 * A training run: batches → step graph → periodic checkpoints → a Hugging Face directory.
 *
 * The checkpoint (checkpoint/state.safetensors + state.json in the output directory) holds the
 * parameters and AdamW moments after a step; batches and masks depend only on (seed, step), so a run
 * resumed from it continues exactly as the uninterrupted run would have.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { DikeError } from '../errors.js';
import { loadCheckpoint, type Checkpoint } from '../model/checkpoint.js';
import { fromFloat32, readSafetensors, toFloat32, writeSafetensors, type RawTensor } from '../model/safetensors.js';
import { copyTokenizerFiles } from '../model/tokenizer.js';
import { readJsonObject } from '../model/config.js';
import { ModelRunner, padBatch } from '../runtime/session.js';
import { heldOutPerplexity } from '../score/perplexity.js';
import { sha256File } from '../util/hash.js';
import { dikeVersion } from '../version.js';
import { encodeForClassification, makeBatch, makeClassificationBatch, maskedRowCapacity, packSequences, readLabelled, readParagraphs, type Objective } from './corpus.js';
import type { TrainableModel } from './init.js';
import { TrainSession, type StepBatch } from './session.js';
import type { AdamWSettings, DistillTerms } from './step.js';
import { causalBos } from '../score/text.js';
import { contrastBatch, contrastSchedule, usablePairs, type ContrastPair, type ContrastSettings } from './contrast.js';
import { counterfactualRows, pairsOfStep, teacherGaps, tokenizePairs, withPairRows, type CounterfactualSettings, type TextPair } from './counterfactual.js';

export interface Schedule {
  peak: number;
  warmup: number;
  /** After warmup: constant, linear decay or cosine decay to `minRatio`·peak at the last step. */
  decay: 'constant' | 'linear' | 'cosine';
  minRatio: number;
}

/** Learning rate of update t (1-based) of `steps`: linear warmup from 0, then the decay. */
export function learningRate(s: Schedule, t: number, steps: number): number {
  if (s.warmup > 0 && t <= s.warmup) return (s.peak * t) / s.warmup;
  if (s.decay === 'constant') return s.peak;
  const progress = steps > s.warmup ? Math.min(1, (t - s.warmup) / (steps - s.warmup)) : 1;
  const shape = s.decay === 'linear' ? 1 - progress : 0.5 * (1 + Math.cos(Math.PI * progress));
  return s.peak * (s.minRatio + (1 - s.minRatio) * shape);
}

export interface TrainSettings {
  objective: Objective;
  data: string[];
  seq: number;
  batch: number;
  steps: number;
  schedule: Schedule;
  adamw: AdamWSettings;
  seed: number;
  mlmProbability: number;
  /** Steps between checkpoints (0: only at the end). */
  checkpointEvery: number;
  /**
   * What stays frozen: module names (embeddings, attention, ffn, head, norms), layer.N for a whole
   * block, or parameter-name prefixes.
   */
  freeze: string[];
  /** Keep the zeros of pruned matrices: entries that are exactly 0 stay 0. */
  keepSparsity: boolean;
  /** Held-out text: the first `lines` lines are scored after training. */
  valid?: { file: string; lines: number };
  dtype: 'F32' | 'F16';
  threads?: number;
  distill?: DistillTerms;
  /** Counterfactual gap penalty on sentence pairs (causal LMs; the pairs come in RunOptions.pairs). */
  counterfactual?: CounterfactualSettings;
  /**
   * Pseudo-log-likelihood contrast (masked LMs; contrast.ts): the loss is (1/P) Σ softplus(m − s·g_k)
   * over the pairs of each step (RunOptions.contrastPairs) and nothing else; `batch` counts masked
   * copies, `seq` their padded length; the text in `data` is not read.
   */
  contrast?: ContrastSettings;
}

export interface StepLog {
  step: number;
  loss: number;
  gradNorm: number;
  lr: number;
  tokensPerSecond: number;
  etaSeconds: number;
}

export interface TrainResult {
  outDir: string;
  steps: number;
  resumedFrom: number;
  tokens: number;
  seconds: number;
  losses: number[];
  /** Held-out metric; accuracy carries a 95% Wilson interval (perplexity is a corpus statistic, reported as is). */
  heldOut?: { kind: string; value: number; tokens: number; lines: number; ci95?: [number, number] };
}

const CHECKPOINT_DIR = 'checkpoint';

/** SHA-256 of an input file; an unreadable file is a one-line error naming it. */
function inputSha256(file: string, what: string): string {
  try {
    return sha256File(file);
  } catch (e) {
    throw new DikeError(file, '', `cannot read ${what}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
}

/** What identifies a run: a checkpoint is resumed only by the same run. */
function runKey(model: TrainableModel, settings: TrainSettings, dataSha256: readonly string[], teacher?: Checkpoint, pairs?: readonly TextPair[], box?: RunOptions['box'], project?: RunOptions['project'], contrastPairs?: readonly ContrastPair[]): string {
  const h = createHash('sha256');
  if (contrastPairs !== undefined) h.update(`contrast:${JSON.stringify(contrastPairs)}`);
  if (project !== undefined) h.update(`project:${project.key}`);
  if (box !== undefined) {
    for (const name of [...box.keys()].sort()) {
      const { lo, hi } = box.get(name)!;
      h.update(`box:${name}`).update(new Uint8Array(lo.buffer, lo.byteOffset, lo.byteLength)).update(new Uint8Array(hi.buffer, hi.byteOffset, hi.byteLength));
    }
  }
  if (pairs !== undefined) h.update(JSON.stringify(pairs.map((p) => [p.stereotype, p.antiStereotype, p.group ?? ''])));
  h.update(JSON.stringify({ ...settings, threads: undefined, checkpointEvery: undefined, data: dataSha256 }));
  h.update(JSON.stringify(model.rawConfig));
  for (const name of [...model.params.keys()].sort()) {
    const d = model.params.get(name)!.data;
    h.update(name).update(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
  }
  if (teacher !== undefined) h.update(teacher.dir).update(JSON.stringify(teacher.rawConfig));
  return h.digest('hex');
}

function writeJsonAtomic(file: string, value: unknown): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(value, null, 2) + '\n');
  renameSync(tmp, file);
}

/** Write a Hugging Face directory for `model` with parameter values `values` (others as loaded). */
export function writeModelDir(outDir: string, model: TrainableModel, values: ReadonlyMap<string, Float32Array>, tokenizerDir: string, dtype: 'F32' | 'F16'): void {
  mkdirSync(outDir, { recursive: true });
  writeJsonAtomic(path.join(outDir, 'config.json'), model.rawConfig);
  copyTokenizerFiles(tokenizerDir, outDir);
  const tensors: [string, RawTensor][] = [...model.params.keys()].sort().map((name) => {
    const p = model.params.get(name)!;
    return [name, fromFloat32(values.get(name) ?? p.data, p.shape, dtype)];
  });
  writeSafetensors(path.join(outDir, 'model.safetensors'), tensors);
}

/**
 * A `--keep-sparsity` run's output is still a pruned model: compression.json records each kept matrix's
 * sparsity (the fraction of its zeros), so that the audit's size (src/audit/size.ts) counts it as pruned.
 * Quantization of the starting model is not carried over (fine-tuning moves the weights off its grid);
 * the starting model's own compression.json is kept under `base_compression` for the record.
 */
function writeKeptSparsity(outDir: string, model: TrainableModel, masks: ReadonlyMap<string, Float32Array>): void {
  const baseFile = path.join(model.dir, 'compression.json');
  const matrices = [...masks.keys()].sort().map((weight) => {
    const m = masks.get(weight)!;
    let zeros = 0;
    for (let i = 0; i < m.length; i++) if (m[i] === 0) zeros++;
    return { weight, method: 'keep-sparsity', sparsity: zeros / m.length };
  });
  writeJsonAtomic(path.join(outDir, 'compression.json'), {
    tool: 'dike',
    version: dikeVersion(),
    source: { dir: model.dir, architecture: model.hfClass },
    fine_tune: { keep_sparsity: true },
    weights_sha256: sha256File(path.join(outDir, 'model.safetensors')),
    steps: [{ step: 1, method: 'keep-sparsity', matrices }],
    ...(existsSync(baseFile) ? { base_compression: JSON.parse(readFileSync(baseFile, 'utf8')) as unknown } : {}),
  });
}

export interface RunOptions {
  tokenizerDir: string;
  /** Teacher model (distillation): its logits at the loss rows come from ordinary inference. */
  teacher?: Checkpoint;
  onStep?: (log: StepLog) => void;
  onMessage?: (line: string) => void;
  /** Stop after this many steps in this process (tests of resume); the checkpoint is written first. */
  stopAfter?: number;
  /** Sentence pairs for settings.counterfactual (the CLI reads them with measure/pairs.ts). */
  pairs?: readonly TextPair[];
  /**
   * Projected training: after every optimizer update each named parameter is clamped entrywise into
   * [lo, hi] (projected gradient descent on a box; the testbed's fragile debias uses it). Parameters not
   * named are unconstrained. The run key includes the box, so a checkpoint resumes only under the same box.
   */
  box?: ReadonlyMap<string, { lo: Float32Array; hi: Float32Array }>;
  /**
   * A further projection applied to each trained parameter after every update, before the box clamp
   * (the testbed's calibration-blind correction); `key` identifies it in the run key.
   */
  project?: { key: string; apply: (name: string, v: Float32Array) => void };
  /** The pairs for settings.contrast, as masked copies (measure/crows-pairs.ts pairObjectives). */
  contrastPairs?: readonly ContrastPair[];
}

/** Clamp `v` entrywise into [lo, hi]. */
export function clampInto(v: Float32Array, lo: Float32Array, hi: Float32Array): void {
  for (let i = 0; i < v.length; i++) {
    const x = v[i]!;
    if (x < lo[i]!) v[i] = lo[i]!;
    else if (x > hi[i]!) v[i] = hi[i]!;
  }
}

export async function train(model: TrainableModel, settings: TrainSettings, outDir: string, opts: RunOptions): Promise<TrainResult> {
  const say = opts.onMessage ?? (() => {});
  if (existsSync(path.join(outDir, 'training.json'))) throw new DikeError(outDir, '', 'holds a finished training run (training.json); choose another --out');
  const { objective, seq: S, batch: B, steps } = settings;
  if (model.task !== objective) throw new DikeError(model.configFile, '"architectures"', `${model.hfClass} is a ${model.task} model; it cannot train with the ${objective} objective`);
  if (S > model.shape.maxPositions) throw new DikeError(model.configFile, '"max_position_embeddings"', `${model.shape.maxPositions} is shorter than --seq ${S}`);
  // The held-out file is read only after training: check it first, so that a typo costs no run.
  if (settings.valid !== undefined) inputSha256(settings.valid.file, 'held-out text');
  const dataSha256 = settings.data.map((f) => inputSha256(f, 'training text'));
  const cf = settings.counterfactual;
  if (cf !== undefined) {
    if (objective !== 'causal-lm') throw new DikeError(model.configFile, '"architectures"', `the counterfactual penalty scores sentence log-probs of a causal LM; this run trains ${objective}`);
    if (opts.pairs === undefined || opts.pairs.length === 0) throw new DikeError(cf.source, '', 'no sentence pair for the counterfactual penalty');
  }
  const pc = settings.contrast;
  let contrastPairs: ContrastPair[] = [];
  let schedule: number[][] = [];
  if (pc !== undefined) {
    if (objective !== 'masked-lm') throw new DikeError(model.configFile, '"architectures"', `the pseudo-log-likelihood contrast scores masked copies; this run trains ${objective}`);
    if (cf !== undefined || settings.distill !== undefined) throw new DikeError(pc.source, '', 'the pseudo-log-likelihood contrast runs alone (no counterfactual penalty, no distillation)');
    const u = usablePairs(opts.contrastPairs ?? [], S, B);
    if (u.kept.length === 0) throw new DikeError(pc.source, '', `no sentence pair for the contrast fits ${B} copies of ${S} tokens`);
    if (u.dropped > 0) say(`contrast: ${u.dropped} pairs left out (no shared token, or more than ${B} copies or ${S} tokens)`);
    contrastPairs = u.kept;
    schedule = contrastSchedule(contrastPairs, B, steps, settings.seed);
  }
  const key = runKey(model, settings, dataSha256, opts.teacher, cf !== undefined ? opts.pairs : undefined, opts.box, opts.project, pc !== undefined ? contrastPairs : undefined);
  if (opts.box !== undefined) {
    for (const [name, { lo, hi }] of opts.box) {
      const p = model.params.get(name);
      if (p === undefined || lo.length !== p.data.length || hi.length !== p.data.length) throw new Error(`box for ${name} does not match the model`);
    }
  }
  const ckptDir = path.join(outDir, CHECKPOINT_DIR);
  mkdirSync(ckptDir, { recursive: true });

  const tok = model.tokenizer;
  const classify = objective === 'sequence-classification';
  let seqs: number[][] = [];
  let examples: { ids: number[]; label: number }[] = [];
  const labels = model.shape.labels ?? [];
  if (classify) {
    examples = settings.data.flatMap((f) => readLabelled(f, labels)).map((e) => ({ ids: encodeForClassification(tok, e.text, S), label: e.label }));
    say(`data: ${examples.length} labelled examples (${((steps * B) / examples.length).toFixed(2)} epochs)`);
  } else if (pc !== undefined) {
    say(`data: ${contrastPairs.length} pairs from ${pc.source} → ${schedule.length} steps of up to ${B} masked copies`);
  } else {
    const paragraphs = readParagraphs(settings.data);
    seqs = packSequences(paragraphs, tok, { objective, seq: S, seed: settings.seed, maxSequences: steps * B });
    say(`data: ${paragraphs.length} paragraphs → ${seqs.length} sequences of ${S} tokens${seqs.length < steps * B ? ` (cycled: ${((steps * B) / seqs.length).toFixed(2)} epochs)` : ''}`);
  }
  const rows = pc !== undefined ? 0 : objective === 'masked-lm' ? maskedRowCapacity(B, S, settings.mlmProbability) : classify ? B : B * (S - 1);
  const masks = new Map<string, Float32Array>();
  if (settings.keepSparsity) {
    for (const [name, p] of model.params) {
      if (p.shape.length < 2 || /embed|wte|wpe/.test(name)) continue;
      if (p.data.some((x) => x === 0)) masks.set(name, Float32Array.from(p.data, (x) => (x === 0 ? 0 : 1)));
    }
    say(`keeping the zeros of ${masks.size} pruned matrices fixed`);
  }
  const bos = cf !== undefined ? causalBos(model) : 0;
  const pairTokens = cf !== undefined ? tokenizePairs(opts.pairs!, (t) => tok.encode(t, { addSpecialTokens: false }).ids, bos, S, cf.groupWeighting ?? 'none') : [];
  const contrastShape = { margin: pc?.margin ?? 0, pairs: Math.max(1, ...schedule.map((c) => c.length)), rows: B };
  const session = await TrainSession.create(
    model,
    {
      batch: B + 2 * (cf?.perStep ?? 0), seq: S, rows, optimizer: settings.adamw, masks,
      trainable: frozenSelector(model, settings.freeze),
      ...(settings.distill ? { distill: settings.distill } : {}),
      ...(cf !== undefined ? { counterfactual: { weight: cf.weight, pairs: cf.perStep, rows: counterfactualRows(cf.perStep, S) } } : {}),
      ...(pc !== undefined ? { contrast: contrastShape } : {}),
    },
    settings.threads,
  );
  const teacher = opts.teacher ? await ModelRunner.create(opts.teacher, settings.threads !== undefined ? { threads: settings.threads } : {}) : undefined;

  // Resume.
  let losses: number[] = [];
  let resumedFrom = 0;
  const stateJson = path.join(ckptDir, 'state.json');
  if (existsSync(stateJson)) {
    const state = readJsonObject(stateJson) as unknown as { key: string; step: number; losses: number[] };
    if (state.key !== key) throw new DikeError(outDir, CHECKPOINT_DIR, 'holds a checkpoint of a different run (other model, data or settings); choose another --out or delete it');
    const st = readSafetensors(path.join(ckptDir, 'state.safetensors'));
    // The tensors and state.json are renamed into place one after the other: a run killed between the
    // two renames leaves state.json one checkpoint behind, so the step and losses the tensors carry win.
    const meta = st.metadata;
    if (meta['step'] !== undefined && meta['losses'] !== undefined) {
      state.step = Number(meta['step']);
      state.losses = JSON.parse(meta['losses']) as number[];
    }
    for (const k of session.trained) {
      for (const [map, prefix] of [[session.params, ''], [session.m, 'm.'], [session.v, 'v.']] as const) {
        const t = st.tensors.get(prefix + k);
        if (t === undefined) throw new DikeError(path.join(ckptDir, 'state.safetensors'), `tensor "${prefix + k}"`, 'missing from the checkpoint');
        map.set(k, toFloat32(t));
      }
    }
    session.step = state.step;
    losses = state.losses;
    resumedFrom = state.step;
    say(`resuming from the checkpoint at step ${state.step}`);
  }
  const saveCheckpoint = (): void => {
    const tensors: [string, RawTensor][] = [];
    for (const k of session.trained) {
      tensors.push([k, fromFloat32(session.params.get(k)!, model.params.get(k)!.shape, 'F32')]);
      tensors.push([`m.${k}`, fromFloat32(session.m.get(k)!, model.params.get(k)!.shape, 'F32')]);
      tensors.push([`v.${k}`, fromFloat32(session.v.get(k)!, model.params.get(k)!.shape, 'F32')]);
    }
    writeSafetensors(path.join(ckptDir, 'state.safetensors'), tensors, { format: 'pt', step: String(session.step), losses: JSON.stringify(losses) });
    writeJsonAtomic(stateJson, { key, step: session.step, losses });
  };

  const batchSpec = {
    objective, batch: B, seq: S, rows, seed: settings.seed, mlmProbability: settings.mlmProbability,
    vocabSize: tok.vocabSize, specialIds: tok.specialIds, ...(tok.special.mask !== undefined ? { maskId: tok.special.mask } : {}),
  };
  const started = Date.now();
  let ranHere = 0;
  while (session.step < steps) {
    const t = session.step + 1;
    let batch: StepBatch = pc !== undefined
      ? contrastBatch(contrastPairs, schedule[t - 1]!, contrastShape, S, pc.sign, tok.special.pad ?? 0)
      : classify
      ? makeClassificationBatch(examples, { batch: B, seq: S, seed: settings.seed, padId: tok.special.pad ?? 0 }, t - 1)
      : makeBatch(seqs, { ...batchSpec, objective: objective as 'masked-lm' | 'causal-lm' }, t - 1);
    if (cf !== undefined) {
      const chosen = pairsOfStep(pairTokens, cf.perStep, t);
      batch = withPairRows(batch, chosen, tok.special.pad ?? tok.special.eos ?? 0);
      if (teacher !== undefined) batch.cfTeacherGap = await teacherGaps(teacher, bos, chosen);
    }
    if (teacher !== undefined) await addTeacherOutputs(teacher, batch, settings.distill!, session.rowsFor(batch));
    const lr = learningRate(settings.schedule, t, steps);
    const r = await session.update(batch, lr);
    if (opts.project !== undefined) for (const k of session.trained) opts.project.apply(k, session.params.get(k)!);
    if (opts.box !== undefined) {
      for (const k of session.trained) {
        const b = opts.box.get(k);
        if (b !== undefined) clampInto(session.params.get(k)!, b.lo, b.hi);
      }
    }
    if (!Number.isFinite(r.loss)) throw new DikeError(outDir, `step ${t}`, `the loss is ${r.loss}; lower the learning rate (the last checkpoint is kept)`);
    losses.push(r.loss);
    ranHere++;
    const secs = (Date.now() - started) / 1000;
    opts.onStep?.({ step: t, loss: r.loss, gradNorm: r.gradNorm, lr, tokensPerSecond: (ranHere * B * S) / secs, etaSeconds: (secs / ranHere) * (steps - t) });
    if ((settings.checkpointEvery > 0 && t % settings.checkpointEvery === 0) || t === steps || ranHere === opts.stopAfter) saveCheckpoint();
    if (ranHere === opts.stopAfter && t < steps) {
      await session.release();
      return { outDir, steps: t, resumedFrom, tokens: t * B * S, seconds: secs, losses };
    }
  }
  const seconds = (Date.now() - started) / 1000;
  writeModelDir(outDir, model, session.params, opts.tokenizerDir, settings.dtype);
  if (masks.size > 0) writeKeptSparsity(outDir, model, masks);
  await session.release();
  const result: TrainResult = { outDir, steps, resumedFrom, tokens: steps * B * S, seconds, losses };
  if (settings.valid !== undefined && classify) {
    const trained = loadCheckpoint(outDir);
    const runner = await ModelRunner.create(trained, settings.threads !== undefined ? { threads: settings.threads } : {});
    const held = readLabelled(settings.valid.file, labels).slice(0, settings.valid.lines);
    let correct = 0;
    for (const ex of held) {
      const ids = encodeForClassification(tok, ex.text, S);
      const [h] = await runner.hidden(padBatch([ids], tok.special.pad ?? 0));
      const logits = await runner.logits(h!.subarray(0, trained.shape.hiddenSize), 1);
      let best = 0;
      for (let k = 1; k < logits.length; k++) if (logits[k]! > logits[best]!) best = k;
      if (best === ex.label) correct++;
    }
    await runner.dispose();
    const ci95 = wilsonInterval(correct, held.length);
    result.heldOut = { kind: 'accuracy', value: correct / held.length, tokens: 0, lines: held.length, ci95 };
    say(`held-out accuracy on ${held.length} examples of ${path.basename(settings.valid.file)}: ${(100 * correct / held.length).toFixed(2)}% [${(100 * ci95[0]).toFixed(2)}, ${(100 * ci95[1]).toFixed(2)}] (95% Wilson)`);
  } else if (settings.valid !== undefined) {
    const trained = loadCheckpoint(outDir);
    const runner = await ModelRunner.create(trained, settings.threads !== undefined ? { threads: settings.threads } : {});
    const lines = readFileSync(settings.valid.file, 'utf8').split('\n').filter((l) => l !== '').slice(0, settings.valid.lines);
    const p = await heldOutPerplexity(trained, runner, lines, { maxPositions: S });
    await runner.dispose();
    result.heldOut = { kind: p.kind, value: p.value, tokens: p.tokens, lines: p.lines };
    say(`held-out ${p.kind} on ${p.lines} lines of ${path.basename(settings.valid.file)}: ${p.value.toFixed(3)} (${p.tokens} tokens)`);
  }
  const record: TrainingRecord = {
    tool: 'dike',
    version: dikeVersion(),
    architecture: model.hfClass,
    settings: { ...settings, threads: undefined, data: settings.data.map((f, i) => ({ file: path.basename(f), sha256: dataSha256[i]! })), valid: settings.valid ? { file: path.basename(settings.valid.file), lines: settings.valid.lines } : undefined },
    ...(opts.teacher ? { teacher: { dir: opts.teacher.dir, architecture: opts.teacher.hfClass } } : {}),
    steps,
    tokens_seen: steps * B * S,
    wall_seconds_last_process: seconds,
    resumed_from_step: resumedFrom,
    losses_every_step: losses.map((l) => Number(l.toFixed(5))),
    held_out: result.heldOut ?? null,
  };
  writeJsonAtomic(path.join(outDir, 'training.json'), record);
  writeFileSync(path.join(outDir, 'TRAINING.md'), trainingCard(record));
  rmSync(ckptDir, { recursive: true, force: true });
  return result;
}

/** Teacher logits at the loss rows (and hidden states for the MSE term), by ordinary inference. */
async function addTeacherOutputs(teacher: ModelRunner, batch: StepBatch, terms: DistillTerms, rowsUsed: number): Promise<void> {
  const { batch: B, seq: S } = batch;
  const L = teacher.numLayers;
  const wantHidden = terms.hiddenPairs !== undefined && (terms.hiddenWeight ?? 0) !== 0 ? terms.hiddenPairs.map(([, t]) => t) : [];
  const layers = [...new Set([L, ...wantHidden])];
  const states = await teacher.hidden({ batch: B, seq: S, lengths: new Array<number>(B).fill(S), inputIds: batch.inputIds, attentionMask: batch.attentionMask }, layers);
  const H = teacher.hiddenSize;
  const last = states[0]!;
  // Only the rows the step graph will read (the rest are zero-weight padding).
  const R = rowsUsed;
  const rowStates = new Float32Array(R * H);
  for (let r = 0; r < R; r++) rowStates.set(last.subarray(Number(batch.rows[r]) * H, Number(batch.rows[r]) * H + H), r * H);
  batch.teacherLogits = await teacher.logits(rowStates, R);
  if (wantHidden.length > 0) {
    batch.teacherHidden = new Map(wantHidden.map((l) => [l, states[layers.indexOf(l)]!]));
    // The graph sums ‖h_s − h_t‖² over real (unmasked) tokens only; the mean is over those tokens too.
    let real = 0;
    for (let i = 0; i < batch.attentionMask.length; i++) if (Number(batch.attentionMask[i]) !== 0) real++;
    batch.hiddenScale = (terms.hiddenWeight ?? 0) / (Math.max(real, 1) * H);
  }
}

/** What training.json records about a run. */
export interface TrainingRecord {
  tool: string;
  version: string;
  architecture: string;
  settings: Omit<TrainSettings, 'data' | 'valid' | 'threads'> & { data: { file: string; sha256: string }[]; valid?: { file: string; lines: number }; threads?: undefined };
  teacher?: { dir: string; architecture: string };
  steps: number;
  tokens_seen: number;
  wall_seconds_last_process: number;
  resumed_from_step: number;
  losses_every_step: number[];
  held_out: TrainResult['heldOut'] | null;
}

/** A model card (TRAINING.md) from a training record: data, settings, curve and held-out result. */
export function trainingCard(r: TrainingRecord): string {
  const s = r.settings;
  const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
  const every = Math.max(1, Math.round(r.steps / 40));
  const curve = r.losses_every_step.filter((_, i) => (i + 1) % every === 0).map((l) => l.toFixed(3));
  const rows: [string, string][] = [
    ['architecture', r.architecture],
    ['objective', s.contrast !== undefined
      ? `pseudo-log-likelihood contrast: mean softplus(${s.contrast.margin} − ${s.contrast.sign > 0 ? '' : '−'}g) over each step's pairs, g = PLL of sent_more's shared tokens − sent_less's (${s.contrast.source}); batch = masked copies`
      : s.objective + (s.objective === 'masked-lm' ? ` (${100 * s.mlmProbability}% of non-special positions; 80% [MASK], 10% random, 10% kept)` : '')],
    ['data', s.data.map((d) => `${d.file} (SHA-256 ${d.sha256})`).join(', ')],
    ['sequence length × batch', `${s.seq} × ${s.batch}`],
    ['steps / tokens seen', `${r.steps} / ${r.tokens_seen}`],
    ['learning rate', `peak ${s.schedule.peak}, linear warmup ${s.schedule.warmup} steps, then ${s.schedule.decay}${s.schedule.decay === 'constant' ? '' : ` to ${s.schedule.minRatio} × peak`}`],
    ['optimizer', `AdamW β=(${s.adamw.beta1}, ${s.adamw.beta2}) ε=${s.adamw.eps} weight decay ${s.adamw.weightDecay} on ≥2-D tensors` + (s.adamw.maxGradNorm !== undefined ? `, gradient clipping at global norm ${s.adamw.maxGradNorm}` : '')],
    ['seed', String(s.seed)],
    ['stored dtype', s.dtype],
    ['wall time', `${Math.round(r.wall_seconds_last_process)} s${r.resumed_from_step > 0 ? ` (after resuming from step ${r.resumed_from_step})` : ''}`],
    ['final training loss (mean of the last 20 steps)', mean(r.losses_every_step.slice(-20)).toFixed(4)],
  ];
  if (r.teacher) rows.push(['teacher', `${r.teacher.architecture} (${r.teacher.dir})`]);
  const lines = [
    `# Training record (${r.tool} ${r.version})`,
    '',
    '| setting | value |',
    '|---|---|',
    ...rows.map(([k, v]) => `| ${k} | ${v.replace(/\|/g, '\\|')} |`),
    '',
  ];
  if (r.held_out) {
    lines.push('## Held-out evaluation', '', `${r.held_out.kind} on the first ${r.held_out.lines} lines of ${s.valid?.file ?? 'the held-out file'}: **${r.held_out.value.toFixed(3)}**` + (r.held_out.ci95 ? ` (95% Wilson interval ${r.held_out.ci95[0].toFixed(3)}–${r.held_out.ci95[1].toFixed(3)})` : '') + (r.held_out.tokens > 0 ? ` over ${r.held_out.tokens} scored tokens` : '') + '.', '');
  }
  lines.push(`Training loss every ${every} steps: ${curve.join(', ')}`, '', 'Every step\'s loss is in training.json.', '');
  return lines.join('\n');
}

const LAYER_INDEX = /\.(?:layer|h|layers)\.(\d+)\./;

/** The trainable-parameter predicate for `freeze` items (see TrainSettings.freeze). */
export function frozenSelector(model: TrainableModel, freeze: readonly string[]): (name: string) => boolean {
  const linears = model.family.linears(model.config, model.task);
  const inModule = (module: string): Set<string> =>
    new Set(linears.filter((l) => l.module === module).flatMap((l) => (l.bias !== undefined ? [l.weight, l.bias] : [l.weight])));
  const matchers = freeze.map((item): ((name: string) => boolean) => {
    if (item === 'head') {
      const names = inModule(item);
      return (n) => names.has(n) || /^(cls|lm_head|classifier)\.|\.pooler\./.test(n);
    }
    if (item === 'attention' || item === 'ffn') {
      const names = inModule(item);
      return (n) => names.has(n);
    }
    if (item === 'embeddings') return (n) => /embed|\.wte\.|\.wpe\./.test(n) && !/LayerNorm|layer_norm/.test(n);
    if (item === 'norms') return (n) => /LayerNorm|layernorm|layer_norm|\.ln_|\.norm\./i.test(n);
    const layer = /^layer\.(\d+)$/.exec(item);
    if (layer) return (n) => LAYER_INDEX.exec(n)?.[1] === layer[1];
    return (n) => n.startsWith(item);
  });
  // An item that freezes nothing is a typo, not a choice: refuse it rather than train everything.
  freeze.forEach((item, i) => {
    if (![...model.params.keys()].some((n) => matchers[i]!(n))) {
      throw new DikeError('', '--freeze', `"${item}" matches no parameter of the model (use embeddings, attention, ffn, head, norms, layer.N or a parameter-name prefix; a tied head is frozen through its embedding)`);
    }
  });
  return (name) => !matchers.some((f) => f(name));
}

/** Wilson score interval for k successes in n trials (Wilson 1927), 95% (z = 1.96). */
export function wilsonInterval(k: number, n: number, z = 1.959963984540054): [number, number] {
  if (n === 0) return [NaN, NaN];
  const p = k / n;
  const centre = (p + (z * z) / (2 * n)) / (1 + (z * z) / n);
  const half = (z / (1 + (z * z) / n)) * Math.sqrt((p * (1 - p)) / n + (z * z) / (4 * n * n));
  // At k = 0 or k = n one bound is exactly 0 or 1; computed, it can round just inside.
  return [k === 0 ? 0 : Math.max(0, centre - half), k === n ? 1 : Math.min(1, centre + half)];
}
