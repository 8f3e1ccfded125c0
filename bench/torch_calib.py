"""PyTorch side of the calibration benchmark (run by bench/gptq.ts, whose header says how).

GPTQ's calibration as its reference code runs it (IST-DASLab/gptq, AutoGPTQ): the model's forward
over the calibration batches with a forward hook on every nn.Linear that accumulates XᵀX of the
module's input. Here the hook works once per distinct input tensor (q, k and v read the same one;
the reference computes it three times, so this is the faster PyTorch), drops pad positions as
Dikē does, and adds each batch's float32 XᵀX to a float64 sum, as Dikē does, so the two sides'
sums can be compared. The model is bench/torch_bert.py's BERT with its linear maps as nn.Linear.

    /usr/bin/python3 bench/torch_calib.py MODEL_DIR BATCHES.json --threads N [--layers L (hook the first L layers)]

BATCHES.json: {"batches": [[[ids…], …], …], "padId": 0}. Prints one JSON line: wall and process
CPU seconds of the calibration, tokens, and per weight the float64 sum and absolute sum of its
XᵀX (a checksum to compare with Dikē's).
"""
import argparse
import json
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_bert import Bert, pad  # noqa: E402


class Hooked(Bert):
    """Bert whose linear maps are nn.Linear modules, so that forward hooks see their inputs."""

    def __init__(self, model_dir, layers):
        super().__init__(model_dir)
        self.mods = {}
        for name, t in self.w.items():
            if name.endswith(".weight") and t.dim() == 2 and name.startswith("bert.encoder.layer."):
                prefix = name[: -len(".weight")]
                if int(prefix.split(".")[3]) >= layers:  # hooked layers; the forward runs them all
                    continue
                m = torch.nn.Linear(t.shape[1], t.shape[0])
                m.weight.data = t
                m.bias.data = self.w[prefix + ".bias"]
                self.mods[prefix] = m

    def _linear(self, x, prefix):
        m = self.mods.get(prefix)
        return m(x) if m is not None else F.linear(x, self.w[prefix + ".weight"], self.w[prefix + ".bias"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("batches")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--layers", type=int, default=1 << 30)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    with open(args.batches) as f:
        spec = json.load(f)
    model = Hooked(args.model, args.layers)
    sums = {}  # prefix -> float64 [in, in]; modules reading the same tensor share one
    state = {"rows": None, "last": None, "last_sum": None}

    def hook(prefix):
        def run(mod, inp, out):
            x = inp[0]
            if state["last"] is x:
                sums[prefix] = state["last_sum"]
                return
            x2 = x.reshape(-1, x.shape[-1])[state["rows"]]
            g = sums.get(prefix)
            if g is None:
                g = sums[prefix] = torch.zeros(x.shape[-1], x.shape[-1], dtype=torch.float64)
            g += (x2.t() @ x2).double()
            state["last"], state["last_sum"] = x, g
        return run

    for prefix, m in model.mods.items():
        m.register_forward_hook(hook(prefix))
    batches = [pad(b, spec["padId"]) for b in spec["batches"]]
    tokens = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for ids, mask in batches:
        state["rows"] = mask.reshape(-1).bool()
        tokens += int(mask.sum())
        model.body(ids, mask)
        state["last"] = None
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    check = {p + ".weight": [float(g.sum()), float(g.abs().sum())] for p, g in sums.items()}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": secs, "cpu": cpu, "tokens": tokens, "peak_rss_mib": peak, "torch": torch.__version__, "threads": torch.get_num_threads(), "checksums": check}))


if __name__ == "__main__":
    main()
