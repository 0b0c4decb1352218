"""The Markdown tables of benches/cost from its JSON lines: per model and mode, the batch sweep
(at 256) and the resolution sweep (at batch 16), images/s on each thread count as the median of
the repeats with their range, the speed-up of the most threads over one, and peak resident
memory (median over repeats, MiB).

    python3 benches/cost_table.py cost.jsonl "# header line" > cost.md
"""
import json
import statistics
import sys
from collections import defaultdict


def main(path, header):
    runs = defaultdict(list)
    for line in open(path):
        r = json.loads(line)
        b = r["bench"]
        runs[(r["model"], r["mode"], r["batch"], r["size"], r["threads"])].append(
            (b["img_per_s"], b["peak_rss_mib"]))
    threads = sorted({k[4] for k in runs})
    print(header)
    print()
    for model in sorted({k[0] for k in runs}):
        for mode in [m for m in ("forward", "train") if any(k[1] == m for k in runs if k[0] == model)]:
            keys = sorted({(k[2], k[3]) for k in runs if k[:2] == (model, mode)})
            sweeps = [("batch", [k for k in keys if k[1] == 256]), ("resolution", [k for k in keys if k[0] == 16])]
            for name, sel in sweeps:
                if len(sel) < 2:
                    continue
                print(f"**{model}, {mode}, {name} sweep** ({'256x256' if name == 'batch' else 'batch 16'})")
                print()
                cols = [f"img/s, {t} thread{'s' if t > 1 else ''}" for t in threads]
                mem = [f"peak MiB, {t} th." for t in threads]
                extra = [f"{threads[-1]} vs 1 thread"] if len(threads) > 1 and threads[0] == 1 else []
                print("| batch | size | " + " | ".join(cols + extra + mem) + " |")
                print("|---|---|" + "---|" * (len(cols) + len(extra) + len(mem)))
                for (batch, size) in sel:
                    cells, meds, mems = [], {}, []
                    for t in threads:
                        v = runs.get((model, mode, batch, size, t))
                        if not v:
                            cells.append("–")
                            mems.append("–")
                            continue
                        ips = [x[0] for x in v]
                        meds[t] = statistics.median(ips)
                        rng = f" ({min(ips):.1f}–{max(ips):.1f})" if len(ips) > 1 else ""
                        cells.append(f"{meds[t]:.1f}{rng}")
                        mems.append(f"{statistics.median(x[1] for x in v):.0f}")
                    if extra:
                        cells.append(f"{meds[threads[-1]] / meds[1]:.2f}x" if threads[-1] in meds and 1 in meds else "–")
                    print(f"| {batch} | {size} | " + " | ".join(cells + mems) + " |")
                print()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "")
