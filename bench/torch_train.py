"""PyTorch side of the training-step benchmark (run by bench/train.ts; see bench/README.md).

One BertForMaskedLM training step in plain torch: the model is torch_bert.Bert (HF semantics in
eval mode: post-LN encoder, exact GELU, decoder tied to the word embeddings + cls.predictions.bias,
no dropout) with its weights turned into trainable leaves. A step is

    forward -> masked-LM loss (mean cross-entropy over the masked positions) -> backward
    -> clip_grad_norm_(max_norm) -> torch.optim.AdamW.step()

in one of two variants, each with its own copy of the model and optimizer state:

    rows  the hidden states of the masked positions are gathered before the MLM head, so the
          vocabulary projection runs only there (what Dike's step graph does);
    all   Hugging Face's BertForMaskedLM: the head runs at every position, labels = -100 elsewhere.

    /usr/bin/python3 bench/torch_train.py WORKLOAD.json --threads N

The workload file (written by bench/train.ts) names the initial weights (a model directory Dike
initialised) and holds every step's batch: token ids, masked rows and their targets, as Dike's
makeBatch made them. Server protocol as torch_bert.py: JSON lines in on stdin
({"variant": "rows"|"all", "step": t}), JSON lines out on stdout (first the environment, then
{"ms", "cpu_ms", "loss", "grad_norm"} per step).
"""
import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F

from torch_bert import Bert, ready_info, reply


class Trainer:
    """One model copy with its optimizer, taking steps of one variant."""

    def __init__(self, model_dir, trained, opt):
        self.model = Bert(model_dir)
        w = self.model.w
        missing = [k for k in trained if k not in w]
        if missing:
            raise ValueError(f"parameters Dike trains are not in the checkpoint: {missing[:5]}")
        # Parameters Dike does not train stay plain tensors (there are none for this model).
        self.params = {k: torch.nn.Parameter(w[k].clone()) for k in trained}
        w.update(self.params)
        decay = [p for p in self.params.values() if p.dim() >= 2]
        no_decay = [p for p in self.params.values() if p.dim() < 2]
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": opt["weightDecay"]}, {"params": no_decay, "weight_decay": 0.0}],
            lr=opt["lr"],
            betas=(opt["beta1"], opt["beta2"]),
            eps=opt["eps"],
        )
        self.max_norm = opt["maxGradNorm"]

    def step(self, variant, b):
        """One timed update on prepared tensors b; returns (seconds, CPU seconds, loss, grad norm
        before clipping)."""
        c0 = time.process_time()
        t0 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        hidden = self.model.body(b["ids"], b["mask"])  # [B, S, H]
        if variant == "rows":
            picked = hidden.reshape(-1, hidden.shape[-1])[b["rows"]]  # [n, H]
            loss = F.cross_entropy(self.model.head(picked), b["targets"])
        else:
            logits = self.model.head(hidden)  # [B, S, V]
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b["labels"], ignore_index=-100)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(list(self.params.values()), self.max_norm)
        self.opt.step()
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - c0
        return seconds, cpu, loss.item(), norm.item()


def tensors(step, B, S):
    """A step's batch as torch tensors, built once, outside the timed region."""
    ids = torch.tensor(step["inputIds"], dtype=torch.int64).view(B, S)
    rows = torch.tensor(step["rows"], dtype=torch.int64)
    targets = torch.tensor(step["targets"], dtype=torch.int64)
    labels = torch.full((B * S,), -100, dtype=torch.int64)
    labels[rows] = targets
    # Packed sequences have no padding; the mask is still applied, as HF does.
    return {"ids": ids, "mask": torch.ones(B, S, dtype=torch.int64), "rows": rows, "targets": targets, "labels": labels}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("workload")
    ap.add_argument("--threads", type=int, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with open(args.workload) as f:
        w = json.load(f)
    B, S = w["batch"], w["seq"]
    batches = [tensors(s, B, S) for s in w["steps"]]
    trainers = {v: Trainer(w["modelDir"], w["trained"], w["optimizer"]) for v in ("rows", "all")}
    reply(ready_info(params=sum(p.numel() for p in trainers["rows"].params.values())))
    for line in sys.stdin:
        req = json.loads(line)
        seconds, cpu, loss, norm = trainers[req["variant"]].step(req["variant"], batches[req["step"]])
        reply({"ms": seconds * 1000, "cpu_ms": cpu * 1000, "loss": loss, "grad_norm": norm})


if __name__ == "__main__":
    main()
