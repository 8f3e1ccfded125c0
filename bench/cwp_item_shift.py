"""How far each variant of an audit moves the item scores from the dense model's (paired, per item).

  python3 bench/cwp_item_shift.py <audit-out>/dike.sqlite [--benchmark crows-pairs] [--against SUBSTRING]

Prints per variant: outcome flips, mean |Δd| (d = the item score, e.g. CrowS-Pairs'
score(sent_more) − score(sent_less)) with a percentile bootstrap 95% CI (2000 resamples, seed 0),
mean Δd; then mean(|Δd_A| − |Δd_B|) for the variant named by --against (default: the first with
"saliency" in its name) against every other variant, paired by item. Standard library only.
"""
import argparse
import random
import sqlite3

ap = argparse.ArgumentParser()
ap.add_argument('store')
ap.add_argument('--benchmark', default='crows-pairs')
ap.add_argument('--against', default='saliency')
a = ap.parse_args()
c = sqlite3.connect(a.store)
runs = c.execute("select r.id, m.name from runs r join models m on m.id = r.model_id where r.benchmark = ? and r.status = 'done'", (a.benchmark,)).fetchall()
sc = {name: {i: (s, o) for i, s, o in c.execute('select item_id, score, outcome from items where run_id = ?', (rid,))} for rid, name in runs}
dense = sc.pop('dense')
ids = sorted(dense)
rnd = random.Random(0)


def boot(vals, B=2000):
    n = len(vals)
    m = sorted(sum(vals[rnd.randrange(n)] for _ in range(n)) / n for _ in range(B))
    return m[int(0.025 * B)], m[int(0.975 * B)]


print(f"{'variant':60s} flips  mean|Δd|  95% CI              mean Δd")
for name, v in sc.items():
    flips = sum(1 for i in ids if v[i][1] != dense[i][1])
    ad = [abs(v[i][0] - dense[i][0]) for i in ids]
    lo, hi = boot(ad)
    print(f"{name[:60]:60s} {flips:5d}  {sum(ad) / len(ad):.4f}  [{lo:.4f}, {hi:.4f}]  {sum(v[i][0] - dense[i][0] for i in ids) / len(ids):+.4f}")
ref = next(n for n in sc if a.against in n)
for other in sc:
    if other == ref:
        continue
    diff = [abs(sc[ref][i][0] - dense[i][0]) - abs(sc[other][i][0] - dense[i][0]) for i in ids]
    lo, hi = boot(diff)
    print(f"|Δd| {ref[:30]} − {other[:50]:50s} {sum(diff) / len(diff):+.4f} [{lo:+.4f}, {hi:+.4f}]")
