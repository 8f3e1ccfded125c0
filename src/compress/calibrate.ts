/**
 * Calibration: token sequences sampled (seeded) from a text file, and the input statistics Σ x xᵀ of
 * chosen linear maps computed on them with ONNX Runtime (see model/graph/capture.ts). Statistics are
 * computed on the model's current weights, so a later recipe step sees the earlier steps' effect.
 */
import { readFileSync } from 'node:fs';
import ort from 'onnxruntime-node';
import { DikeError } from '../errors.js';
import type { LinearInfo } from '../model/arch/types.js';
import type { Checkpoint, Param } from '../model/checkpoint.js';
import { withLinearInputGrams } from '../model/graph/capture.js';
import { graphToOnnx } from '../model/graph/to-onnx.js';
import { Rng } from '../util/rng.js';
import { sha256Bytes } from '../util/hash.js';
import { buildBodyGraph, buildHeadGraph, gatherRows, ortSessionOptions, padBatch, type ModelLike } from '../runtime/session.js';
import type { CalibrationSet, CalibrationSpec, InputStats } from './calibration-types.js';

export type { CalibrationSet, CalibrationSpec } from './calibration-types.js';

/**
 * `samples` sequences of exactly `seqLen` tokens (fewer only if the file is shorter): each starts at
 * a seeded random line and takes following lines until long enough. BERT-style models get
 * [CLS] … [SEP]; causal models BOS + text, as they see text when scored.
 */
export function sampleCalibration(ckpt: Pick<Checkpoint, 'tokenizer' | 'task' | 'rawConfig'>, spec: CalibrationSpec): CalibrationSet {
  let text: string;
  try {
    text = readFileSync(spec.file, 'utf8');
  } catch (e) {
    throw new DikeError(spec.file, '', `calibration text (--calibration): ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : (e as Error).message}`);
  }
  const lines = text.split(/\r?\n/).filter((l) => l.trim() !== '');
  if (lines.length === 0) throw new DikeError(spec.file, '', 'calibration text is empty');
  const rng = new Rng(spec.seed);
  const tok = ckpt.tokenizer;
  const causal = ckpt.task === 'causal-lm';
  const bos = typeof ckpt.rawConfig['bos_token_id'] === 'number' ? (ckpt.rawConfig['bos_token_id'] as number) : tok.special.bos ?? tok.special.eos;
  const sequences: number[][] = [];
  for (let s = 0; s < spec.samples; s++) {
    let line = rng.int(lines.length);
    let ids: number[] = [];
    const body = causal ? spec.seqLen - 1 : spec.seqLen - 2;
    for (let guard = 0; ids.length < body && guard < lines.length; guard++) {
      ids = ids.concat(tok.encode((ids.length > 0 ? ' ' : '') + lines[line]!, { addSpecialTokens: false }).ids);
      line = (line + 1) % lines.length;
    }
    ids = ids.slice(0, body);
    if (causal) sequences.push(bos === undefined ? ids : [bos, ...ids]);
    else sequences.push([tok.special.cls ?? 101, ...ids, tok.special.sep ?? 102]);
  }
  const flat = Int32Array.from(sequences.flat());
  return { sequences, hash: sha256Bytes(new Uint8Array(flat.buffer)), spec };
}

/** Σ x xᵀ of each target's input over every calibration token, on the given (current) weights. */
export async function inputStats(
  model: ModelLike,
  params: Map<string, Param>,
  targets: readonly LinearInfo[],
  calib: CalibrationSet,
  opts: { threads?: number; batchRows?: number } = {},
): Promise<Map<string, InputStats>> {
  const m: ModelLike = { ...model, params };
  const sessionOpts = ortSessionOptions(opts.threads);
  const bodyTargets = targets.filter((t) => t.layer >= 0).map((t) => t.weight);
  const headTargets = targets.filter((t) => t.layer < 0).map((t) => t.weight);
  const L = model.shape.numLayers;
  const H = model.shape.hiddenSize;
  const sums = new Map<string, { gram: Float64Array; tokens: number; dim: number }>();
  const add = (name: string, data: Float32Array, tokens: number, dim: number): void => {
    let s = sums.get(name);
    if (s === undefined) sums.set(name, (s = { gram: new Float64Array(dim * dim), tokens: 0, dim }));
    for (let i = 0; i < data.length; i++) s.gram[i]! += data[i]!;
    s.tokens += tokens;
  };
  const body = withLinearInputGrams(buildBodyGraph(m), bodyTargets, 'attention_mask');
  const bodySession = await ort.InferenceSession.create(graphToOnnx(body.graph), sessionOpts);
  const head = headTargets.length > 0 ? withLinearInputGrams(buildHeadGraph(m, 'logits'), headTargets) : undefined;
  const headSession = head ? await ort.InferenceSession.create(graphToOnnx(head.graph), sessionOpts) : undefined;
  const dimOf = new Map(targets.map((t) => [t.weight, t.inDim]));
  const bodyOutputs = [...new Set(body.grams.values())];
  const rowsPerBatch = opts.batchRows ?? 16;
  try {
    for (let start = 0; start < calib.sequences.length; start += rowsPerBatch) {
      const seqs = calib.sequences.slice(start, start + rowsPerBatch);
      const batch = padBatch(seqs, 0);
      const tokens = batch.lengths.reduce((a, b) => a + b, 0);
      const dims = [batch.batch, batch.seq];
      const fetches = head ? [...bodyOutputs, `hidden.${L}`] : bodyOutputs;
      const out = await bodySession.run(
        { input_ids: new ort.Tensor('int64', batch.inputIds, dims), attention_mask: new ort.Tensor('int64', batch.attentionMask, dims) },
        fetches,
      );
      for (const [w, o] of body.grams) add(w, out[o]!.data as Float32Array, tokens, dimOf.get(w)!);
      if (head && headSession) {
        const at: [number, number][] = [];
        batch.lengths.forEach((n, r) => {
          for (let p = 0; p < n; p++) at.push([r, p]);
        });
        const rows = gatherRows(out[`hidden.${L}`]!.data as Float32Array, batch.seq, H, at);
        const hOut = await headSession.run({ rows: new ort.Tensor('float32', rows, [at.length, H]) }, [...new Set(head.grams.values())]);
        for (const [w, o] of head.grams) add(w, hOut[o]!.data as Float32Array, at.length, dimOf.get(w)!);
      }
    }
  } finally {
    await bodySession.release();
    await headSession?.release();
  }
  return sums;
}
