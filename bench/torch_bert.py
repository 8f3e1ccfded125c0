"""PyTorch side of Dikē's speed benchmark (run by bench/run.ts; see bench/README.md).

BertForMaskedLM written out in plain torch, with the semantics of Hugging Face's module in eval
mode: post-LN encoder, exact (erf) GELU, additive attention mask (1 - mask) * finfo(float32).min,
MLM head dense -> GELU -> LayerNorm -> word_embeddings^T + cls.predictions.bias. Weights are read
from model.safetensors with json + numpy (no safetensors package).

    /usr/bin/python3 bench/torch_bert.py WORKLOAD.json --threads N

The workload file (written by bench/workload.ts) holds the token ids and the batches, so this
script only executes them. It is a small server driven by bench/run.ts, which alternates Dikē
and PyTorch passes so that both see the same machine load: JSON lines in on stdin, JSON lines
out on stdout (first a line describing the environment, then one answer per request).
"""
import argparse
import ctypes
import json
import resource
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------

def read_safetensors(path):
    """name -> float32 torch tensor."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        raw = data[base + begin:base + end]
        dtype = entry["dtype"]
        if dtype == "F32":
            arr = np.frombuffer(raw, dtype="<f4")
        elif dtype == "F16":
            arr = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        elif dtype == "BF16":
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(f"{path}: tensor {name}: dtype {dtype} is not a float type")
        out[name] = torch.from_numpy(arr.astype(np.float32).reshape(entry["shape"]))
    return out


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------

class Bert:
    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            cfg = json.load(f)
        self.hidden = cfg["hidden_size"]
        self.layers = cfg["num_hidden_layers"]
        self.heads = cfg["num_attention_heads"]
        self.eps = cfg.get("layer_norm_eps", 1e-12)
        if cfg.get("hidden_act", "gelu") != "gelu":
            raise ValueError("only hidden_act = gelu (exact) is implemented")
        self.w = read_safetensors(os.path.join(model_dir, "model.safetensors"))

    def _ln(self, x, prefix):
        return F.layer_norm(x, (self.hidden,), self.w[prefix + ".weight"], self.w[prefix + ".bias"], self.eps)

    def _linear(self, x, prefix):
        return F.linear(x, self.w[prefix + ".weight"], self.w[prefix + ".bias"])

    def body(self, ids, mask):
        """ids, mask: int64 [B, S] -> last hidden state [B, S, H]."""
        w = self.w
        B, S = ids.shape
        H, nh = self.hidden, self.heads
        d = H // nh
        e = "bert.embeddings"
        x = (
            F.embedding(ids, w[e + ".word_embeddings.weight"])
            + w[e + ".token_type_embeddings.weight"][0]
            + w[e + ".position_embeddings.weight"][:S]
        )
        x = self._ln(x, e + ".LayerNorm")
        bias = (1.0 - mask[:, None, None, :].to(torch.float32)) * torch.finfo(torch.float32).min
        scale = math.sqrt(d)
        for l in range(self.layers):
            p = f"bert.encoder.layer.{l}"

            def heads(t):
                return t.view(B, S, nh, d).permute(0, 2, 1, 3)

            q = heads(self._linear(x, p + ".attention.self.query"))
            k = heads(self._linear(x, p + ".attention.self.key"))
            v = heads(self._linear(x, p + ".attention.self.value"))
            scores = torch.matmul(q, k.transpose(-1, -2)) / scale + bias
            ctx = torch.matmul(torch.softmax(scores, dim=-1), v).permute(0, 2, 1, 3).reshape(B, S, H)
            a = self._ln(self._linear(ctx, p + ".attention.output.dense") + x, p + ".attention.output.LayerNorm")
            inter = F.gelu(self._linear(a, p + ".intermediate.dense"))
            x = self._ln(self._linear(inter, p + ".output.dense") + a, p + ".output.LayerNorm")
        return x

    def head(self, rows):
        """rows [..., H] -> logits [..., V] (decoder tied to the word embeddings)."""
        t = F.gelu(self._linear(rows, "cls.predictions.transform.dense"))
        t = self._ln(t, "cls.predictions.transform.LayerNorm")
        return F.linear(t, self.w["bert.embeddings.word_embeddings.weight"], self.w["cls.predictions.bias"])


# --------------------------------------------------------------------------------------------
# Workloads (same definitions as bench/workload.ts)
# --------------------------------------------------------------------------------------------

def pad(seqs, pad_id):
    S = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), S), pad_id, dtype=torch.int64)
    mask = torch.zeros((len(seqs), S), dtype=torch.int64)
    for r, s in enumerate(seqs):
        ids[r, :len(s)] = torch.tensor(s, dtype=torch.int64)
        mask[r, :len(s)] = 1
    return ids, mask


def checksum_positions(n):
    return sorted({0, 1, n - 1})


def run_pass(model, w, case, check):
    # The forward batches Dikē runs (pll: its same-length batches within each group of B sentences).
    for group in case["batches"]:
        sents = [w["sentences"][i] for i in group]
        if case["kind"] == "forward-real":
            ids, mask = pad([s["ids"] for s in sents], w["padId"])
            hidden = model.body(ids, mask)
            logits = model.head(hidden[mask.bool()])  # [sum of lengths, V], row-major real tokens
            if check is not None:
                off = 0
                for s in sents:
                    rows = logits[[off + p for p in checksum_positions(len(s["ids"]))]].double()
                    check["sum"] += rows.sum().item()
                    check["scale"] += rows.abs().sum().item()
                    off += len(s["ids"])
        elif case["kind"] == "forward":
            ids, mask = pad([s["ids"] for s in sents], w["padId"])
            logits = model.head(model.body(ids, mask))  # [B, S, V]
            if check is not None:
                for r, s in enumerate(sents):
                    rows = logits[r, checksum_positions(len(s["ids"]))].double()
                    check["sum"] += rows.sum().item()
                    check["scale"] += rows.abs().sum().item()
        else:
            # Every non-special position masked alone; all copies of the batch in one forward pass.
            copies, rows_at, cols_at, targets = [], [], [], []
            for s in sents:
                for p in s["positions"]:
                    c = list(s["ids"])
                    c[p] = w["maskId"]
                    rows_at.append(len(copies))
                    cols_at.append(p)
                    targets.append(s["ids"][p])
                    copies.append(c)
            ids, mask = pad(copies, w["padId"])
            hidden = model.body(ids, mask)
            picked = hidden[torch.tensor(rows_at), torch.tensor(cols_at)]  # [n, H]
            lsm = torch.log_softmax(model.head(picked), dim=-1)
            lp = lsm.gather(1, torch.tensor(targets).unsqueeze(1)).squeeze(1)
            if check is not None:
                lp64 = lp.double()
                check["sum"] += lp64.sum().item()
                check["scale"] += lp64.abs().sum().item()


def timed_pass(model, w, case, with_checksum):
    check = {"sum": 0.0, "scale": 0.0} if with_checksum else None
    c0 = time.process_time()
    t0 = time.perf_counter()
    run_pass(model, w, case, check)
    return time.perf_counter() - t0, time.process_time() - c0, check


# --------------------------------------------------------------------------------------------
# Environment report
# --------------------------------------------------------------------------------------------

ENV_KEYS = ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")


def openblas_info():
    """Which OpenBLAS torch has loaded, and the kernel set (core) it picked for this CPU."""
    torch.mm(torch.ones(2, 2), torch.ones(2, 2))  # make sure the BLAS library is loaded
    # Debian's libblas.so.3 / liblapack.so.3 in openblas-pthread/ are thin wrappers around libopenblas.
    paths = set()
    with open("/proc/self/maps") as f:
        for line in f:
            if "libopenblas" in line:
                paths.add(line.split()[-1])
    if not paths:
        return None
    path = sorted(paths)[0]
    lib = ctypes.CDLL(path)  # the already loaded library: same handle, same state
    info = {"library": path}
    for fn, key in (("openblas_get_corename", "core"), ("openblas_get_config", "config")):
        f = getattr(lib, fn, None)
        if f is not None:
            f.restype = ctypes.c_char_p
            info[key] = f().decode()
    f = getattr(lib, "openblas_get_num_threads", None)
    if f is not None:
        f.restype = ctypes.c_int
        info["threads"] = f()
    return info


def torch_config_summary():
    keep = []
    for line in torch.__config__.show().splitlines():
        s = line.strip()
        if s.startswith(("- Intel(R) MKL", "- Intel(R) Math Kernel", "- OpenMP", "- CPU capability", "- LAPACK", "- MKL-DNN")):
            keep.append(s[2:])
        elif s.startswith("- Build settings:"):
            for item in s[len("- Build settings:"):].split(","):
                item = item.strip()
                if item.startswith(("BLAS_INFO", "LAPACK_INFO", "USE_MKLDNN", "USE_OPENMP", "TORCH_VERSION")):
                    keep.append(item)
    return keep


def start_server():
    """Parse `workload --threads N`, load the workload's model and announce readiness with the
    versions and settings in use; returns (workload, model)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("workload")
    ap.add_argument("--threads", type=int, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    with open(args.workload) as f:
        w = json.load(f)
    model = Bert(w["dir"])
    reply(ready_info())
    return w, model


def ready_info(**extra):
    """The first reply of a benchmark server: versions, threads and BLAS build, for RESULTS.md."""
    return {
        "ready": True,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "threads": torch.get_num_threads(),
        "openblas": openblas_info(),
        "torchConfig": torch_config_summary(),
        "env": {k: os.environ.get(k) for k in ENV_KEYS},
        **extra,
    }


def main():
    w, model = start_server()
    # One request per line: {"case": i, "checksum": bool} runs one pass and answers
    # {"time": seconds, "checksum": {"sum", "scale"} | null}; end of input ends the process.
    with torch.inference_mode():
        for line in sys.stdin:
            req = json.loads(line)
            if req.get("gemm"):
                reply(gemm_rate(req["gemm"]))
                continue
            seconds, cpu, check = timed_pass(model, w, w["cases"][req["case"]], req["checksum"])
            reply({"time": seconds, "cpu": cpu, "checksum": check, "maxRssKiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss})


def gemm_rate(n):
    """float32 GFLOP/s of torch.mm on n×n matrices (best of 5 after one warm-up): the machine's
    GEMM rate through OpenBLAS, for the roofline column."""
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return {"gflops": 2 * n ** 3 / best / 1e9}


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
