"""Helper of benches/data-vs-torchvision: generates the JPEGs, and times torchvision's
ImageFolder + RandomResizedCrop + RandomHorizontalFlip + ToTensor (PIL backend)."""
import argparse
import json
import resource
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
    best = 0.0
    for _ in range(repeats + 1):
        t = time.perf_counter()
        n = sum(x.shape[0] for x, _ in loader)
        best = max(best, n / (time.perf_counter() - t))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if nw:
        peak += resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"img_per_s": best, "images": n, "workers": workers, "peak_rss_mib": peak}))


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
    t.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    if a.cmd == "generate":
        generate(a.out, a.n)
    else:
        torchvision_run(a.root, a.size, a.workers, a.repeats)
