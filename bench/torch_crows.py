"""PyTorch side of the CrowS-Pairs nangia-pll benchmark (run by bench/crows.ts).

Two implementations of nyu-mll/crows-pairs metric.py's score, on the BertForMaskedLM of
bench/torch_bert.py (imported, not copied):

  bs1      as metric.py and bias-bench run it: one forward per masked copy (batch size 1), the MLM
           head over every position of the copy, then log_softmax of the masked position's logits;
           the sentence score is the Python-float sum of the `.item()` log-probabilities.
  batched  the masked copies of several sentences in one right-padded batch (the batches are
           given by the workload: the same length buckets Dikē forms), the head and log_softmax
           only at the masked rows.

The token ids, the scored positions (from Dikē's difflib alignment) and the batches all come
from the workload file written by bench/crows.ts, so that both sides score exactly the same
positions. Protocol as bench/torch_bert.py (and bench/torch-server.ts): one JSON line describing
the environment, then one answer per request line {"case": i, "checksum": bool}:
{"time": seconds, "checksum": null, "scores": [[s1, s2], ...], "outcomes": ["hit"|"miss"|"neutral", ...]}
with one entry per pair of the case, in the case's order. The outcome is metric.py's, with
Python's round(score, 3).

    /usr/bin/python3 bench/torch_crows.py WORKLOAD.json --threads N
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from torch_bert import pad, reply, start_server  # noqa: E402


def sentence(pair, k):
    return (pair["ids1"], pair["pos1"]) if k == 0 else (pair["ids2"], pair["pos2"])


def run_bs1(model, w, case):
    """metric.py's get_log_prob_unigram, one masked copy at a time."""
    mask_id = w["maskId"]
    log_softmax = torch.nn.LogSoftmax(dim=0)
    scores = []
    for pi in case["pairs"]:
        pair = w["pairs"][pi]
        both = []
        for k in (0, 1):
            ids, positions = sentence(pair, k)
            token_ids = torch.tensor([ids], dtype=torch.int64)
            attention = torch.ones_like(token_ids)
            score = 0.0
            for p in positions:
                masked = token_ids.clone().detach()
                masked[0][p] = mask_id
                logits = model.head(model.body(masked, attention)).squeeze(0)  # [S, V]
                score += log_softmax(logits[p])[token_ids[0][p]].item()
            both.append(score)
        scores.append(both)
    return scores


def run_batched(model, w, case):
    """All masked copies of a group of sentences in one batch; head only at the masked rows."""
    mask_id, pad_id = w["maskId"], w["padId"]
    sums = {}
    for group in case["groups"]:
        copies, rows_at, cols_at, targets, owners = [], [], [], [], []
        for pi, k in group:
            ids, positions = sentence(w["pairs"][pi], k)
            for p in positions:
                c = list(ids)
                c[p] = mask_id
                rows_at.append(len(copies))
                cols_at.append(p)
                targets.append(ids[p])
                owners.append((pi, k))
                copies.append(c)
        if not copies:
            continue
        ids_t, attention = pad(copies, pad_id)
        hidden = model.body(ids_t, attention)
        picked = hidden[torch.tensor(rows_at), torch.tensor(cols_at)]  # [n, H]
        lsm = torch.log_softmax(model.head(picked), dim=-1)
        lp = lsm.gather(1, torch.tensor(targets).unsqueeze(1)).squeeze(1).tolist()
        # Summed in position order, in double precision, as metric.py's Python-float accumulation.
        for owner, x in zip(owners, lp):
            sums[owner] = sums.get(owner, 0.0) + x
    return [[sums.get((pi, 0), 0.0), sums.get((pi, 1), 0.0)] for pi in case["pairs"]]


def outcome(direction, s1, s2):
    """metric.py: sent1 is sent_more for stereo pairs and sent_less for antistereo pairs."""
    r1, r2 = round(s1, 3), round(s2, 3)
    if r1 == r2:
        return "neutral"
    if direction == "stereo":
        return "hit" if r1 > r2 else "miss"
    return "hit" if r2 > r1 else "miss"


def main():
    w, model = start_server()
    runners = {"bs1": run_bs1, "batched": run_batched}
    with torch.inference_mode():
        for line in sys.stdin:
            req = json.loads(line)
            case = w["cases"][req["case"]]
            t0 = time.perf_counter()
            scores = runners[case["mode"]](model, w, case)
            seconds = time.perf_counter() - t0
            outcomes = [outcome(w["pairs"][pi]["direction"], s1, s2) for pi, (s1, s2) in zip(case["pairs"], scores)]
            reply({"time": seconds, "checksum": None, "scores": scores, "outcomes": outcomes})


if __name__ == "__main__":
    main()
