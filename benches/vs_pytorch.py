"""PyTorch eager side of benches/vs-pytorch: times one configuration and prints one JSON line
with the same fields as `exvit bench`. Same work: eval forward under no_grad, or a train step
(forward in train mode, cross entropy with label smoothing 0.1, backward, AdamW with PyTorch's
defaults and weight decay 0.01)."""
import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools" / "parity"))
from make_fixtures import EXMOBILEVIT, ExMobileViT  # noqa: E402


def build(name):
    if name in EXMOBILEVIT:
        m = ExMobileViT(*EXMOBILEVIT[name])
        m.forward = lambda x: m.forward_all(x)["logits"]
        return m
    return timm.create_model(name, pretrained=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mobilevit_xxs")
    ap.add_argument("--mode", choices=["forward", "train"], default="forward")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = build(a.model)
    x = torch.rand(a.batch, 3, a.size, a.size)
    y = torch.tensor([(7 * i + 3) % 1000 for i in range(a.batch)])
    if a.mode == "forward":
        model.eval()

        def step():
            with torch.no_grad():
                model(x)
    else:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x), y, label_smoothing=0.1)
            loss.backward()
            opt.step()

    for _ in range(a.warmup):
        step()
    times = []
    for _ in range(a.iters):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    secs = statistics.median(times)
    print(json.dumps({
        "side": "pytorch", "model": a.model, "mode": a.mode, "batch": a.batch, "size": a.size,
        "threads": torch.get_num_threads(), "seconds_per_iter": secs, "img_per_s": a.batch / secs,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
