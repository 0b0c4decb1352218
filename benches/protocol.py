"""The side-by-side protocol of exvit's benchmarks on a noisy shared machine: the sides (exvit
and its peers) run in alternation, one short trial each per round, for many rounds; each round
starts with a different side (the order rotates), so slow spells of the machine fall on every
side alike. Each trial is its own process and prints one JSON line with `seconds_per_iter`
(the median of its timed iterations). Reported per side: the median over rounds and its range;
per pair of sides: the median of the per-round ratios and their range.

Used by benches/side_by_side.py (vs-pytorch, latency) and data_vs_torchvision.py; as a
program it runs any set of commands (benches/probe-vs-sklearn/run.sh):

    python3 benches/protocol.py --name probe --field seconds \
        --side exvit "exvit probe bench …" --side sklearn "python probe_vs_sklearn.py … sklearn"

prints `MS <side> <median ms> <min> <max>` per side and, per other side,
`RATIO <name> <first>_vs_<side> <first's median s> <side's median s> <median speed ratio>` and
`SPREAD <name> <first>_vs_<side> <min ratio> <max ratio>`.
"""
import argparse
import json
import shlex
import statistics
import subprocess
import sys


def trial(cmd):
    """Runs one trial; its stdout as JSON (the whole, else its last line that is JSON)."""
    out = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"trial failed ({out.returncode}): {shlex.join(cmd)}\n{out.stderr[-2000:]}")
    try:
        return json.loads(out.stdout)  # one (maybe pretty-printed) JSON document
    except json.JSONDecodeError:
        pass
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    sys.exit(f"no JSON line from: {shlex.join(cmd)}\n{out.stdout[-2000:]}")


def alternate(sides, rounds, log=None, seconds=lambda r: r["seconds_per_iter"]):
    """`sides`: {name: command}. Returns {name: [JSON of each round's trial]}, rounds in order.
    `log` gets a line per trial (its time read by `seconds`)."""
    names = list(sides)
    results = {n: [] for n in names}
    for r in range(rounds):
        for k in range(len(names)):
            name = names[(r + k) % len(names)]
            res = trial(sides[name])
            results[name].append(res)
            if log:
                log(f"round {r + 1}/{rounds} {name}: {1e3 * seconds(res):.2f} ms")
    return results


def summary(values):
    """(median, min, max) of a list of numbers."""
    v = sorted(values)
    return statistics.median(v), v[0], v[-1]


def paired_ratios(results, a, b, seconds=lambda r: r["seconds_per_iter"]):
    """Per-round speed ratios a/b (b's seconds over a's: above 1, a is faster); `seconds` reads
    a trial's time from its JSON."""
    return [seconds(rb) / seconds(ra) for ra, rb in zip(results[a], results[b])]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", action="append", nargs=2, metavar=("NAME", "COMMAND"), required=True,
                    help="a side and its trial command (shell words); the first is the one compared")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--field", default="seconds_per_iter", help="the JSON field with a trial's seconds")
    ap.add_argument("--name", default="run", help="the measurement's name in RATIO and SPREAD lines")
    a = ap.parse_args()
    sides = {name: shlex.split(cmd) for name, cmd in a.side}
    seconds = lambda r: r[a.field]  # noqa: E731
    res = alternate(sides, a.rounds, log=lambda m: print("#", m, file=sys.stderr, flush=True), seconds=seconds)
    for name in sides:
        print(f"# {name}: " + json.dumps(res[name][-1]))
    first = a.side[0][0]
    med = {}
    for name in sides:
        med[name], lo, hi = summary([seconds(r) for r in res[name]])
        print(f"MS {name} {1e3 * med[name]:.1f} {1e3 * lo:.1f} {1e3 * hi:.1f}")
    for name in list(sides)[1:]:
        ratio, lo, hi = summary(paired_ratios(res, first, name, seconds=seconds))
        print(f"RATIO {a.name} {first}_vs_{name} {med[first]:.3f} {med[name]:.3f} {ratio:.3f}")
        print(f"SPREAD {a.name} {first}_vs_{name} {lo:.3f} {hi:.3f}")


if __name__ == "__main__":
    main()
