"""PyTorch side of benches/vs-pytorch and tools/device-check.sh: times one configuration and
prints one JSON line with the same fields as `exvit bench`. Same work: eval forward under
no_grad, or a train step (forward in train mode, cross entropy with label smoothing 0.1,
backward, AdamW with PyTorch's defaults and weight decay 0.01). `--device cuda` runs on the GPU
(synchronised before each clock read), `--bf16` under autocast to bfloat16 (f32 master weights),
`--compile` through torch.compile (the compile happens in the warm-up). `--onnx FILE` times ONNX
Runtime's CPU forward of an `exvit export` file instead (benches/latency)."""
import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools" / "parity"))


def build(name):
    """timm's model; an ExMobileViT or a wide-head control: tools/parity/make_fixtures.py's
    builders on timm's body."""
    import timm
    from make_fixtures import CONTROLS, EXMOBILEVIT, ExMobileViT  # noqa: E402  (needs numpy, safetensors)

    if name in EXMOBILEVIT:
        m = ExMobileViT(*EXMOBILEVIT[name])
        m.forward = lambda x: m.forward_all(x)["logits"]
        return m
    if name in CONTROLS:
        from make_fixtures import build as build_fixture_model

        return build_fixture_model(name)
    return timm.create_model(name, pretrained=False)


def onnxruntime_step(path, x, threads):
    """ONNX Runtime's CPU forward of an `exvit export` file on `x` (a NumPy array), with
    `threads` intra-op threads and every graph optimisation."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    outputs = [session.get_outputs()[0].name]
    return lambda: session.run(outputs, feed), ort.__version__


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mobilevit_xxs")
    ap.add_argument("--mode", choices=["forward", "train"], default="forward")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--onnx", help="time ONNX Runtime (CPU) on this `exvit export` file instead (forward only)")
    a = ap.parse_args()
    if a.onnx:
        # No torch in this process: ONNX Runtime's threads are the only ones.
        import numpy as np

        if a.mode != "forward" or a.device != "cpu" or a.bf16 or a.compile:
            sys.exit("--onnx times a CPU forward in f32 only")
        x = np.random.default_rng(0).random((a.batch, 3, a.size, a.size), dtype=np.float32)
        step, version = onnxruntime_step(a.onnx, x, a.threads)
        secs = timed(step, lambda: None, a.warmup, a.iters)
        report(a, "onnxruntime", secs, {"onnxruntime": version})
        return
    import torch

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    x = torch.rand(a.batch, 3, a.size, a.size, device=dev)
    model = build(a.model).to(dev)
    y = torch.tensor([(7 * i + 3) % 1000 for i in range(a.batch)], device=dev)
    net = torch.compile(model) if a.compile else model
    cast = torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=a.bf16)
    if a.mode == "forward":
        model.eval()

        def step():
            with torch.no_grad(), cast:
                net(x)
    else:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)

        def step():
            opt.zero_grad(set_to_none=True)
            with cast:
                loss = torch.nn.functional.cross_entropy(net(x), y, label_smoothing=0.1)
            loss.backward()
            opt.step()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    secs = timed(step, sync, a.warmup, a.iters)
    report(a, "pytorch", secs, {"threads": torch.get_num_threads(), "torch": torch.__version__, "bf16": a.bf16,
                                "compile": a.compile})


def timed(step, sync, warmup, iters):
    """Median seconds of `step` over `iters` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def report(a, side, secs, extra):
    """The JSON line, with `exvit bench`'s fields."""
    print(json.dumps({
        "side": side, "model": a.model, "mode": a.mode, "batch": a.batch, "size": a.size,
        "threads": a.threads, "seconds_per_iter": secs, "img_per_s": a.batch / secs,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "device": a.device, **extra,
    }))


if __name__ == "__main__":
    main()
