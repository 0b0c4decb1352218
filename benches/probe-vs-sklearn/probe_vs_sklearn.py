"""One linear probe, the same features, three implementations, one run (see run.sh):
scikit-learn's LogisticRegression (lbfgs) and torch.optim.LBFGS (strong Wolfe, full batch) on the
features `exvit probe bench --save` wrote, standardised as exvit does, with the same objective
(mean cross entropy + wd/2·‖W‖², i.e. C = 1/(wd·n)), history 10 and gradient tolerance 1e-5.
Prints one JSON line per implementation; a fifth argument, `torch` or `sklearn`, runs one only
(a trial of run.sh's alternating protocol)."""
import json
import sys
import time

import numpy as np
import torch
from safetensors.numpy import load_file


def main(path, wd, max_iter, threads, only=None):
    torch.set_num_threads(threads)
    f = load_file(path)
    xt, xe, yt, ye = f["x_train"], f["x_eval"], f["y_train"], f["y_eval"]
    mean = xt.astype(np.float64).mean(0)
    std = np.sqrt(xt.astype(np.float64).var(0) + 1e-6)
    xt = ((xt - mean) / std).astype(np.float32)
    xe = ((xe - mean) / std).astype(np.float32)
    if only in (None, "torch"):
        torch_lbfgs(xt, xe, yt, ye, wd, max_iter, threads)
    if only in (None, "sklearn"):
        sklearn_lbfgs(xt, xe, yt, ye, wd, max_iter)


def torch_lbfgs(xt, xe, yt, ye, wd, max_iter, threads):
    """torch.optim.LBFGS: the algorithm burn's LBFGS ports."""
    d, k = xt.shape[1], int(yt.max()) + 1
    X, Y = torch.from_numpy(xt), torch.from_numpy(yt)
    W = torch.zeros(d, k, requires_grad=True)
    b = torch.zeros(k, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1, max_iter=max_iter, history_size=10, tolerance_grad=1e-5,
                            tolerance_change=1e-10, line_search_fn="strong_wolfe")
    evals = [0]

    def closure():
        evals[0] += 1
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(X @ W + b, Y) + wd / 2 * (W * W).sum()
        loss.backward()
        return loss

    t = time.perf_counter()
    loss = opt.step(closure).item()
    secs = time.perf_counter() - t
    with torch.no_grad():
        top1 = float(((torch.from_numpy(xe) @ W + b).argmax(1).numpy() == ye).mean() * 100)
    print(json.dumps({"impl": "torch.optim.LBFGS", "torch": torch.__version__, "threads": threads, "seconds": secs,
                      "evals": evals[0], "loss": loss, "top1": top1}), flush=True)


def sklearn_lbfgs(xt, xe, yt, ye, wd, max_iter):
    """scikit-learn's LogisticRegression (lbfgs) with the same objective."""
    import sklearn
    from sklearn.linear_model import LogisticRegression

    n = xt.shape[0]
    t = time.perf_counter()
    clf = LogisticRegression(C=1.0 / (wd * n), tol=1e-5, max_iter=max_iter).fit(xt, yt)
    secs = time.perf_counter() - t
    top1 = float((clf.predict(xe) == ye).mean() * 100)
    print(json.dumps({"impl": "sklearn LogisticRegression(lbfgs)", "sklearn": sklearn.__version__, "seconds": secs,
                      "iterations": int(np.max(clf.n_iter_)), "top1": top1}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), *sys.argv[5:6])
