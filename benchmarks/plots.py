"""What a sweep job's two PNGs cost: gradtrack's per-run plots vs plain matplotlib.

    .venv/bin/python benchmarks/plots.py [--quick] [--out PATH]   # this section alone

Each job of a ``fit_linear_1d`` learning-rate sweep draws a loss curve (200 epochs)
and a coefficient chart (one feature, learned beside scikit-learn's). Timed per job,
each job writing into a new folder as ``record.py`` does:

* ``gradtrack``: ``artifacts.loss_curve`` + ``artifacts.coefficient_chart`` as a
  sweep runs them, one job after another in one process (kept figures, the shared
  text-caching renderer, the PNG writer).
* ``plain``: the same two plots, each a new figure drawn on a new Agg renderer and
  written by ``savefig``: what the plot code costs without any of that.

Before timing, both sides' PNGs of every job are checked pixel for pixel, so neither
side can win by drawing less. Sides alternate job by job; minima and medians over all
jobs, wall and CPU time (CPU time moves less on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _job_inputs(lr: float, epochs: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """fit_linear_1d's gradient descent: the error shrinks by |1 - 2 lr| a step."""
    shrink = abs(1 - 2 * lr)
    losses = 24.0 + 600 * shrink ** (2 * np.arange(epochs))
    coef = np.array([-3.55808 * (1 - shrink**epochs)])
    return losses, coef


def _plots(artifacts, lr: float, out: Path) -> None:
    losses, coef = _job_inputs(lr)
    artifacts.loss_curve(losses, out / "loss_curve.png", "linear · numpy · sgd")
    artifacts.coefficient_chart(
        ["cylinders"],
        coef,
        42.9155,
        np.array([-3.55808]),
        42.9155,
        out / "coefficients.png",
        scale=np.array([1.70]),
    )


def _pixels(png: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(png) as im:
        return np.asarray(im.convert("RGBA"))


def _job(artifacts, side: str, lr: float, kept: dict) -> tuple[float, float, Path]:
    """One job's two plots on ``side``; returns wall s, CPU s and its folder."""
    from gradtrack import plot_render

    out = Path(tempfile.mkdtemp(prefix=f"plots-{side}-"))
    if side == "plain":
        with plot_render.plain_matplotlib():
            t0, c0 = time.perf_counter(), time.process_time()
            _plots(artifacts, lr, out)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    else:
        # the sweep's own state (kept figures, renderers), set aside while plain runs
        vars(plot_render._renderers).update(kept["renderers"])
        vars(plot_render._figures).update(kept["figures"])
        t0, c0 = time.perf_counter(), time.process_time()
        _plots(artifacts, lr, out)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        kept["renderers"] = dict(vars(plot_render._renderers))
        kept["figures"] = dict(vars(plot_render._figures))
    return wall, cpu, out


def sweep_jobs(jobs: int = 64, rounds: int = 3) -> dict[str, Any]:
    import shutil

    from gradtrack import artifacts

    lrs = np.linspace(0.01, 0.9, jobs)
    kept: dict = {"renderers": {}, "figures": {}}
    times: dict[str, dict[str, list[float]]] = {
        s: {"wall": [], "cpu": []} for s in ("gradtrack", "plain")
    }
    for side in ("gradtrack", "plain"):  # warm-up: imports, first figures
        shutil.rmtree(_job(artifacts, side, 0.1, kept)[2])
    for r in range(rounds):
        for i, lr in enumerate(lrs):
            sides = ("gradtrack", "plain") if (i + r) % 2 == 0 else ("plain", "gradtrack")
            folders = {}
            for side in sides:
                wall, cpu, folders[side] = _job(artifacts, side, lr, kept)
                times[side]["wall"].append(wall)
                times[side]["cpu"].append(cpu)
            if r == 0:  # the same pixels on both sides, every job
                for name in ("loss_curve.png", "coefficients.png"):
                    a, b = (_pixels(folders[s] / name) for s in ("gradtrack", "plain"))
                    if a.shape != b.shape or (a != b).any():
                        raise RuntimeError(f"lr={lr:.4g}: {name} differs from plain matplotlib's")
            for folder in folders.values():
                shutil.rmtree(folder)
    out: dict[str, Any] = {"jobs": jobs, "rounds": rounds}
    for side, t in times.items():
        for kind, values in t.items():
            out[f"{side}_{kind}_ms_min"] = 1000 * min(values)
            out[f"{side}_{kind}_ms_median"] = 1000 * float(np.median(values))
    out["gradtrack_over_plain_cpu_median"] = (
        out["gradtrack_cpu_ms_median"] / out["plain_cpu_ms_median"]
    )
    out["gradtrack_over_plain_wall_min"] = out["gradtrack_wall_ms_min"] / out["plain_wall_ms_min"]
    return out


def run_all(quick: bool = False) -> dict[str, Any]:
    return {"sweep_jobs": sweep_jobs(jobs=8 if quick else 64, rounds=1 if quick else 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="8 jobs, one round")
    ap.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    fig = run_all(quick=args.quick)
    text = json.dumps(fig, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
