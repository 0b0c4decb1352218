"""exvit against PyTorch eager and ONNX Runtime, same work and threads, by the alternating
protocol of benches/protocol.py: per mode, every (model, runtime) takes its turn, one short
trial (its own process) each per round, the order rotating, for `--rounds` rounds, so both the
runtimes of a model and the models of a runtime are compared round by round. Run it through
benches/vs-pytorch or benches/latency, which build exvit and the Python environment.

Modes: `forward_bN` (eval forward, batch N; ONNX Runtime runs
the model's `exvit export` file) and `train_bN` (forward, backward, AdamW; exvit and PyTorch).
Prints per model and mode:

    MS     <model> <mode> <runtime> <median ms> <min ms> <max ms>     (per iteration, over rounds)
    PEAK   <model> <mode> <runtime> <median peak RSS MiB>
    RATIO  <model> <mode> <exvit img/s> <peer img/s> <median ratio> vs <peer>
    SPREAD <model> <mode> <min ratio> <max ratio> vs <peer>
    COST   <model> <base> <mode> <runtime> <median> <min> <max>          (with --compare model:base)

(img/s: the medians; ratio: exvit's speed over the peer's, the median of the per-round ratios,
whose range SPREAD gives; COST: the model's time over the base's, per round), then markdown
tables.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from protocol import alternate, paired_ratios, summary, trial  # noqa: E402

HERE = Path(__file__).resolve().parent


def cpu_name():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def parse_mode(mb):
    mode, batch = mb.rsplit("_b", 1)
    if mode not in ("forward", "train"):
        sys.exit(f"mode `{mb}`: forward_bN or train_bN")
    return mode, int(batch)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exvit", required=True, help="a release build of exvit")
    ap.add_argument("--python", required=True, help="Python with torch, timm and onnxruntime")
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--modes", nargs="+", default=["forward_b1"])
    ap.add_argument("--runtimes", nargs="+", default=["exvit", "onnxruntime", "pytorch"])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--compare", nargs="*", default=[], metavar="MODEL:BASE",
                    help="COST lines: MODEL's time over BASE's, per round, in each runtime")
    ap.add_argument("--seconds", type=float, default=1.0,
                    help="about how long each trial times (its iterations: this over a first guess)")
    a = ap.parse_args()
    if "exvit" not in a.runtimes:
        sys.exit("--runtimes must include exvit (the ratios are exvit's)")
    os.environ.update(RAYON_NUM_THREADS=str(a.threads), OMP_NUM_THREADS=str(a.threads))

    zoo = subprocess.run([a.exvit, "zoo", "list", "--json", "--size", str(a.size)], check=True,
                         capture_output=True, text=True)
    zoo = {r["name"]: r for r in json.loads(zoo.stdout)}
    versions = subprocess.run([a.python, "-c", "import torch, timm, onnxruntime as o; "
                               "print(torch.__version__, timm.__version__, o.__version__)"],
                              check=True, capture_output=True, text=True).stdout.split()
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · {cpu_name()} · {os.cpu_count()} cores · "
          f"threads={a.threads} size={a.size} rounds={a.rounds} · torch {versions[0]}, timm {versions[1]}, "
          f"onnxruntime {versions[2]}", flush=True)

    rows, costs = [], []
    with tempfile.TemporaryDirectory(prefix="exvit-side-by-side-") as work:
        for mb in a.modes:
            mode, batch = parse_mode(mb)
            runtimes = [r for r in a.runtimes if not (r == "onnxruntime" and mode == "train")]
            # Every (model, runtime) of this mode is a side: all take turns in every round, so
            # both the runtimes of a model and the models of a runtime are compared round by round.
            sides, iters_of = {}, {}
            for model in a.models:
                if model not in zoo:
                    sys.exit(f"`{model}` is not a zoo model (exvit zoo list)")
                work_args = ["--mode", mode, "--batch", str(batch), "--size", str(a.size)]
                bench = [a.exvit, "bench", "--model", model, *work_args]
                # A first trial of exvit sizes the model's trials to about --seconds.
                probe = trial([*bench, "--warmup", "1", "--iters", "1"])
                iters = iters_of[model] = max(3, min(50, round(a.seconds / probe["seconds_per_iter"])))
                warmup = 1 if mode == "train" else max(2, iters // 4)
                timing = ["--warmup", str(warmup), "--iters", str(iters)]
                py = [a.python, str(HERE / "vs_pytorch.py"), "--model", model, "--threads", str(a.threads), *work_args,
                      *timing]
                for r in runtimes:
                    if r == "exvit":
                        cmd = [*bench, *timing]
                    elif r == "pytorch":
                        cmd = py
                    elif r == "onnxruntime":
                        onnx = Path(work) / f"{model}_{a.size}_b{batch}.onnx"
                        export = [a.exvit, "export", "--model", model, "--size", str(a.size), "--out", str(onnx)]
                        if batch > 1:
                            export.append("--dynamic-batch")
                        subprocess.run(export, check=True, capture_output=True)
                        cmd = [*py, "--onnx", str(onnx)]
                    else:
                        sys.exit(f"runtime `{r}`: exvit, onnxruntime or pytorch")
                    sides[f"{model}/{r}"] = cmd
            res = alternate(sides, a.rounds, log=lambda m: print(f"# {mb} {m}", file=sys.stderr, flush=True))
            for model in a.models:
                row = {"model": model, "mode": mb, "batch": batch, "iters": iters_of[model],
                       "params": zoo[model]["params"], "macs": zoo[model]["macs"]}
                for r in runtimes:
                    trials = res[f"{model}/{r}"]
                    ms = summary([1e3 * t["seconds_per_iter"] for t in trials])
                    row[r] = ms
                    print(f"MS {model} {mb} {r} {ms[0]:.2f} {ms[1]:.2f} {ms[2]:.2f}")
                    print(f"PEAK {model} {mb} {r} {summary([t['peak_rss_mib'] for t in trials])[0]:.0f}")
                for peer in [r for r in runtimes if r != "exvit"]:
                    ratio = summary(paired_ratios(res, f"{model}/exvit", f"{model}/{peer}"))
                    row[f"vs {peer}"] = ratio
                    ips = lambda r: 1e3 * batch / row[r][0]  # noqa: E731
                    print(f"RATIO {model} {mb} {ips('exvit'):.2f} {ips(peer):.2f} {ratio[0]:.3f} vs {peer}")
                    print(f"SPREAD {model} {mb} {ratio[1]:.3f} {ratio[2]:.3f} vs {peer}", flush=True)
                rows.append(row)
            # What a model costs over another in each runtime: the per-round ratio of latencies.
            for pair in a.compare:
                m, base = pair.split(":")
                if m in a.models and base in a.models:
                    for r in runtimes:
                        cost = summary(paired_ratios(res, f"{base}/{r}", f"{m}/{r}"))
                        print(f"COST {m} {base} {mb} {r} {cost[0]:.4f} {cost[1]:.4f} {cost[2]:.4f}")
                        costs.append((m, base, mb, r, cost))

    peers = [r for r in a.runtimes if r != "exvit"]
    print()
    print("| model | mode | params | GMACs | " + " | ".join(f"{r} ms" for r in a.runtimes) + " | "
          + " | ".join(f"exvit vs {p}" for p in peers) + " |")
    print("|---|---|---|---|" + "---|" * (len(a.runtimes) + len(peers)))
    for r in rows:
        cells = [f"`{r['model']}`", r["mode"], f"{r['params']:,}", f"{r['macs'] / 1e9:.3f}"]
        cells += [f"{r[s][0]:.1f} ({r[s][1]:.1f}–{r[s][2]:.1f})" if s in r else "–" for s in a.runtimes]
        cells += [f"{r[f'vs {p}'][0]:.2f}× ({r[f'vs {p}'][1]:.2f}–{r[f'vs {p}'][2]:.2f})" if f"vs {p}" in r else "–"
                  for p in peers]
        print("| " + " | ".join(cells) + " |")
    if costs:
        print()
        print("| model | over | mode | runtime | time ratio (median, range over rounds) |")
        print("|---|---|---|---|---|")
        for m, base, mb, r, c in costs:
            print(f"| `{m}` | `{base}` | {mb} | {r} | {c[0]:.3f} ({c[1]:.3f}–{c[2]:.3f}) |")


if __name__ == "__main__":
    main()
