"""Fixtures for exvit-probe (tests/fixtures/probe/probe.safetensors), from scikit-learn and NumPy:

- Gaussian class clusters (10 classes, 24 features, overlapping, with per-column scales and
  offsets so that standardisation matters): raw train/eval features and labels;
- the features standardised as exvit does (train mean and population variance + 1e-6);
- scikit-learn's multinomial LogisticRegression (lbfgs, tol 1e-10) on them, at C = 1/(wd·n) for
  wd in {1e-2, 1e-4}: coefficients, intercepts, the objective value (mean cross entropy +
  wd/2·‖W‖²) and eval top-1/top-5;
- linear CKA (Kornblith et al. 2019) in float64 NumPy for two related and one unrelated pair.

  tools/parity/setup.sh && ~/.cache/exvit/parity-venv/bin/pip install -r tools/parity/requirements.txt
  ~/.cache/exvit/parity-venv/bin/python tools/parity/make_probe_fixtures.py
"""
from pathlib import Path

import numpy as np
import sklearn
from safetensors.numpy import save_file
from sklearn.linear_model import LogisticRegression

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "probe"
K, D, N_TRAIN, N_EVAL = 10, 24, 1000, 500
WDS = [1e-2, 1e-4]


def clusters(rng):
    means = rng.normal(size=(K, D)) * 0.8
    scale = np.exp(rng.normal(size=D))
    offset = rng.normal(size=D) * 3

    def draw(n):
        y = rng.integers(0, K, size=n)
        x = (means[y] + rng.normal(size=(n, D)) * 1.3) * scale + offset
        return x.astype(np.float32), y

    return draw(N_TRAIN), draw(N_EVAL)


def standardise(train, other):
    t = train.astype(np.float64)
    mean = t.mean(0)
    std = np.sqrt(t.var(0) + 1e-6)
    return ((train - mean) / std).astype(np.float32), ((other - mean) / std).astype(np.float32)


def topk(logits, y, k):
    # The true class's rank; ties go to the lower index, as argmax.
    target = logits[np.arange(len(y)), y][:, None]
    idx = np.arange(logits.shape[1])[None, :]
    above = ((logits > target) | ((logits == target) & (idx < y[:, None]))).sum(1)
    return 100.0 * float((above < k).mean())


def cka(x, y):
    x = x.astype(np.float64) - x.mean(0)
    y = y.astype(np.float64) - y.mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def main():
    rng = np.random.default_rng(2023)
    (xt, yt), (xe, ye) = clusters(rng)
    st, se = standardise(xt, xe)
    out = {
        "x_train": xt, "y_train": yt.astype(np.int64), "x_eval": xe, "y_eval": ye.astype(np.int64),
        "std_train": st, "std_eval": se,
    }
    for i, wd in enumerate(WDS):
        clf = LogisticRegression(C=1.0 / (wd * N_TRAIN), tol=1e-10, max_iter=100000).fit(st, yt)
        logits = se.astype(np.float64) @ clf.coef_.T + clf.intercept_
        lt = st.astype(np.float64) @ clf.coef_.T + clf.intercept_
        lt -= lt.max(1, keepdims=True)
        nll = -(lt[np.arange(N_TRAIN), yt] - np.log(np.exp(lt).sum(1))).mean()
        obj = nll + wd / 2 * (clf.coef_ ** 2).sum()
        out[f"wd{i}.value"] = np.array([wd])
        out[f"wd{i}.coef"] = np.ascontiguousarray(clf.coef_, dtype=np.float32)  # [K, D]; safetensors writes the raw buffer
        out[f"wd{i}.intercept"] = np.ascontiguousarray(clf.intercept_, dtype=np.float32)
        out[f"wd{i}.objective"] = np.array([obj])
        out[f"wd{i}.top1"] = np.array([topk(logits, ye, 1)])
        out[f"wd{i}.top5"] = np.array([topk(logits, ye, 5)])
        print(f"wd {wd}: objective {obj:.6f} top1 {topk(logits, ye, 1):.2f} top5 {topk(logits, ye, 5):.2f}")
    a = rng.normal(size=(300, 12)).astype(np.float32)
    b = (a @ rng.normal(size=(12, 8)) + 0.5 * rng.normal(size=(300, 8))).astype(np.float32)
    c = rng.normal(size=(300, 20)).astype(np.float32)
    out.update({"cka.a": a, "cka.b": b, "cka.c": c,
                "cka.ab": np.array([cka(a, b)]), "cka.ac": np.array([cka(a, c)]), "cka.bc": np.array([cka(b, c)])})
    print("cka ab %.6f ac %.6f bc %.6f" % (cka(a, b), cka(a, c), cka(b, c)))
    OUT.mkdir(parents=True, exist_ok=True)
    save_file(out, str(OUT / "probe.safetensors"), metadata={"sklearn": sklearn.__version__, "numpy": np.__version__})
    print("wrote", OUT / "probe.safetensors", "with scikit-learn", sklearn.__version__)


if __name__ == "__main__":
    main()
