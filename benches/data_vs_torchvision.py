"""Helper of benches/data-vs-torchvision: generates the JPEGs, times torchvision's
ImageFolder + RandomResizedCrop + RandomHorizontalFlip + ToTensor (PIL backend), and runs the
two sides in alternation (benches/protocol.py)."""
import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import numpy as np


def generate(out: Path, n: int):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        d = out / f"class{i % 10:02d}"
        d.mkdir(parents=True, exist_ok=True)
        # Photo-like statistics: smooth shading (upsampled low-res noise) plus fine texture,
        # so that files are ~100-150 kB, as ImageNet's 500x375 JPEGs are.
        low = rng.random((12, 16, 3)) * 255
        base = np.asarray(Image.fromarray(low.astype(np.uint8)).resize((500, 375), Image.BICUBIC), dtype=np.float64)
        tex = rng.normal(0, 18, (375, 500, 1))
        img = np.clip(base + tex, 0, 255).astype(np.uint8)
        Image.fromarray(img).save(d / f"img{i:05d}.JPEG", quality=90)
    sizes = [p.stat().st_size for p in out.rglob("*.JPEG")]
    print(f"# generated {n} JPEGs 500x375 q90, mean {np.mean(sizes) / 1024:.0f} kB")


def torchvision_run(root: Path, size: int, workers: int, repeats: int):
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    torch.set_num_threads(1)
    tf = transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(), transforms.ToTensor()])
    ds = datasets.ImageFolder(str(root), transform=tf)
    # workers=1 runs in this process (one core), as exvit with one worker; more use processes.
    nw = 0 if workers == 1 else workers
    loader = DataLoader(ds, batch_size=64, shuffle=True, num_workers=nw, persistent_workers=nw > 0)
    # One untimed epoch (workers started, caches warm), then the median of `repeats` epochs.
    rates = []
    for epoch in range(repeats + 1):
        t = time.perf_counter()
        n = sum(x.shape[0] for x, _ in loader)
        if epoch:
            rates.append(n / (time.perf_counter() - t))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if nw:
        peak += resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"img_per_s": statistics.median(rates), "images": n, "workers": workers, "peak_rss_mib": peak}))


def per_image(trial):
    """Seconds per image of a trial: exvit's steady-state epoch, torchvision's timed epochs."""
    return 1 / (trial["img_per_s_steady"] if "img_per_s_steady" in trial else trial["img_per_s"])


def compare(rounds: int, workers: int, exvit: str, torchvision: str):
    """Alternating trials of the two loaders; RATIO, SPREAD, BREAKDOWN and PEAK lines."""
    import shlex

    from protocol import alternate, paired_ratios, summary

    sides = {"exvit": shlex.split(exvit), "torchvision": shlex.split(torchvision)}
    res = alternate(sides, rounds, log=lambda m: print("#", m, "per image", flush=True), seconds=per_image)
    rate = {k: summary([1 / per_image(r) / workers for r in res[k]]) for k in sides}
    ratio = summary(paired_ratios(res, "exvit", "torchvision", seconds=per_image))
    for k in sides:
        print(f"# {k}: {rate[k][0]:.1f} img/s per core (median; range {rate[k][1]:.1f}–{rate[k][2]:.1f})")
    print(f"RATIO data_rrc256 {rate['exvit'][0]:.1f} {rate['torchvision'][0]:.1f} {ratio[0]:.3f}")
    print(f"SPREAD data_rrc256 {ratio[1]:.3f} {ratio[2]:.3f}")
    median_trial = sorted(res["exvit"], key=per_image)[len(res["exvit"]) // 2]
    us = median_trial["us_per_image"]
    print("BREAKDOWN exvit us/image " + " ".join(f"{k}={v:.0f}" for k, v in us.items()) + f" total={sum(us.values()):.0f}")
    peak = {k: summary([r["peak_rss_mib"] for r in res[k]])[0] for k in sides}
    print(f"PEAK exvit {peak['exvit']:.0f} MiB, torchvision {peak['torchvision']:.0f} MiB")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--out", type=Path, required=True)
    g.add_argument("--n", type=int, default=400)
    t = sub.add_parser("torchvision")
    t.add_argument("--root", type=Path, required=True)
    t.add_argument("--size", type=int, default=256)
    t.add_argument("--workers", type=int, default=1)
    t.add_argument("--repeats", type=int, default=1, help="timed epochs (after one untimed)")
    c = sub.add_parser("compare")
    c.add_argument("--rounds", type=int, default=7)
    c.add_argument("--workers", type=int, default=1)
    c.add_argument("--exvit", required=True, help="exvit's trial command (`exvit data load … --json`)")
    c.add_argument("--torchvision", required=True, help="torchvision's trial command (this script's `torchvision`)")
    a = ap.parse_args()
    if a.cmd == "generate":
        generate(a.out, a.n)
    elif a.cmd == "compare":
        compare(a.rounds, a.workers, a.exvit, a.torchvision)
    else:
        torchvision_run(a.root, a.size, a.workers, a.repeats)
