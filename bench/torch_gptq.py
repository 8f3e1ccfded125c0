"""PyTorch side of the GPTQ benchmark (run by bench/gptq.ts, whose header says how).

GPTQ (Frantar et al. 2023, Algorithm 1) written out in plain torch the way the reference
implementation runs it (IST-DASLab/gptq `fasterquant`, AutoGPTQ): float32 throughout (a request
may ask for float64, to check that both sides compute the same thing),
H = 2 X Xᵀ / n, dead inputs (H_jj = 0) get H_jj = 1 and their weights zeroed, λ = 0.01 · mean diag H,
U = cholesky(cholesky_inverse(cholesky(H + λI)), upper=True), lazy batches of 128 columns, and a
group's grid computed from the weights as they are when the column loop reaches the group's first
column. The grid is Dikē's (src/compress/quantizer.ts): symmetric scale = 2·max|w|/maxq (the range
always contains 0), zero = 2^(bits−1), code = clamp(round(w / scale) + zero, 0, maxq), torch.round
rounding half to even.

    /usr/bin/python3 bench/torch_gptq.py --threads N

A small server: JSON lines in on stdin, JSON lines out on stdout (first a line describing the
environment). Each request names a layer file written by bench/gptq.ts (the Gram matrices Σxxᵀ
of the layer's distinct inputs in float64 and its weights in float32 [out, in]); the answer gives
the seconds (wall and process CPU) per input (inverse Hessian) and per matrix (the column loop), and the quantized
weights are written to the file the request names, for bench/gptq.ts to compare with Dikē's.
"""
import argparse
import json
import struct
import sys
import time

import numpy as np
import torch


def read_layer(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    inputs = []
    for inp in header["inputs"]:
        d = inp["dim"]
        g = np.frombuffer(data, dtype="<f8", count=d * d, offset=base + inp["offset"]).reshape(d, d)
        inputs.append((torch.from_numpy(g.copy()), inp["tokens"]))
    mats = []
    for m in header["matrices"]:
        w = np.frombuffer(data, dtype="<f4", count=m["rows"] * m["cols"], offset=base + m["offset"])
        mats.append((m["name"], m["input"], torch.from_numpy(w.reshape(m["rows"], m["cols"]).copy())))
    return header, inputs, mats


def prepare(gram, tokens, damp, dtype):
    """Hinv = upper Cholesky factor of (H + λI)⁻¹, as the reference computes it."""
    H = (gram * (2.0 / tokens)).to(dtype)
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    lam = damp * torch.mean(torch.diag(H))
    idx = torch.arange(H.shape[0])
    H[idx, idx] += lam
    L = torch.linalg.cholesky(H)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
    return Hinv, dead, float(lam)


def grid(x, maxq):
    """Per-row symmetric scale and zero of x [rows, n] (Dikē's grid)."""
    zero = torch.zeros(x.shape[0], dtype=x.dtype)
    xmin = torch.minimum(x.min(1).values, zero)
    xmax = torch.maximum(x.max(1).values, zero)
    amax = torch.maximum(-xmin, xmax)
    amax[amax == 0] = 1
    scale = 2 * amax / maxq
    return scale, torch.full_like(scale, (maxq + 1) / 2)


def quantize(w, scale, zero, maxq):
    q = torch.clamp(torch.round(w / scale) + zero, 0, maxq)
    return scale * (q - zero)


def gptq(W0, Hinv, dead, bits, groupsize, blocksize=128):
    maxq = 2 ** bits - 1
    W = W0.clone()
    W[:, dead] = 0
    rows, cols = W.shape
    if groupsize <= 0 or groupsize >= cols:
        groupsize = cols
    Q = torch.zeros_like(W)
    Losses = torch.zeros(rows, dtype=W.dtype)
    scale, zero = grid(W0, maxq)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            if groupsize < cols and (i1 + i) % groupsize == 0:
                scale, zero = grid(W[:, i1 + i:i1 + i + groupsize], maxq)
            q = quantize(w, scale, zero, maxq)
            Q1[:, i] = q
            err1 = (w - q) / d
            Losses += err1 * err1
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        Q[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return Q, float(Losses.double().sum())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    info = {"torch": torch.__version__, "numpy": np.__version__, "python": sys.version.split()[0], "threads": torch.get_num_threads()}
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        header, inputs, mats = read_layer(req["file"])
        bits, groupsize, damp = header["bits"], header["group_size"], header["damp"]
        dtype = torch.float64 if req.get("dtype") == "float64" else torch.float32
        prepared, prep_s, prep_cpu = [], [], []
        for gram, tokens in inputs:
            t0, c0 = time.perf_counter(), time.process_time()
            prepared.append(prepare(gram, tokens, damp, dtype))
            prep_s.append(time.perf_counter() - t0)
            prep_cpu.append(time.process_time() - c0)
        out, results = [], []
        for name, inp, W in mats:
            Hinv, dead, lam = prepared[inp]
            t0, c0 = time.perf_counter(), time.process_time()
            Q, err_sq = gptq(W.to(dtype), Hinv, dead, bits, groupsize)
            secs, cpu = time.perf_counter() - t0, time.process_time() - c0
            # ‖(W − Q)X‖² = n/2 · (Σ e² − λ‖W' − Q‖²), W' = W with dead inputs zeroed (as Dikē reports it).
            Wd = W.clone()
            Wd[:, dead] = 0
            dq = float(((Wd.double() - Q.double()) ** 2).sum())
            error = inputs[inp][1] / 2 * (err_sq - lam * dq)
            results.append({"name": name, "seconds": secs, "cpu": cpu, "error": error})
            out.append(Q.numpy().astype("<f4").tobytes())
        with open(req["out"], "wb") as f:
            for b in out:
                f.write(b)
        print(json.dumps({"prep_seconds": prep_s, "prep_cpu": prep_cpu, "matrices": results}), flush=True)


if __name__ == "__main__":
    main()
