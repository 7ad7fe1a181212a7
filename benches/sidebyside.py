"""Alternating side-by-side runs for the seed benchmarks (benches/seed00N_dask.py).

Each side is a command run in its own process; its wall time is measured
around the process and its peak RSS is the kernel's figure for that process
alone (os.wait4). The sides run in turn, round after round (A B A B ...), so
a noisy neighbour slows both alike; the medians over the rounds are compared.
"""
import os
import statistics
import subprocess
import time


def run(cmd, env=None):
    """Runs `cmd`; returns (wall seconds, peak RSS bytes). Fails loudly."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, env=env)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd[:3]))} ... exited with {p.returncode}")
    return wall, usage.ru_maxrss * 1024


def alternate(sides, rounds):
    """`sides`: [(label, command)]. Runs them in turn `rounds` times; prints
    each run; returns {label: (median wall, median peak RSS)}."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    rows = {label: [] for label, _ in sides}
    for r in range(rounds):
        for label, cmd in sides:
            wall, rss = run(cmd, env)
            rows[label].append((wall, rss))
            print(f"  round {r + 1}: {label:<12} {wall:8.2f} s, peak RSS {rss / 2**20:7.0f} MiB", flush=True)
    return {
        label: (statistics.median(w for w, _ in v), statistics.median(m for _, m in v))
        for label, v in rows.items()
    }


def summary(title, med, base="dask", ours="blockflow"):
    """Prints the medians and the ratios of `ours` against `base`."""
    (bw, bm), (ow, om) = med[base], med[ours]
    print(title)
    print(f"  median of {base:<10}: {bw:8.2f} s, peak RSS {bm / 2**20:7.0f} MiB")
    print(f"  median of {ours:<10}: {ow:8.2f} s, peak RSS {om / 2**20:7.0f} MiB")
    print(f"  ratio: blockflow {bw / ow:.1f}x faster, at {om / bm:.3f} of dask's peak RSS")


def rounds():
    return int(os.environ.get("ROUNDS", "3"))
