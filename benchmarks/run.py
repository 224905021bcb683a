"""gradtrack's benchmark suite: one command, ratios side by side, results.json.

    .venv/bin/python benchmarks/run.py [--skip-sweep] [--quick] [--out PATH]

Each figure is measured next to its reference in the same run (numpy vs the other
backends, tracking on vs off, a run vs a bare import, a step vs two matvecs), so the
ratios stay meaningful on a loaded or slow machine even when absolute times do not.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import measure  # noqa: E402
import plain_loops  # noqa: E402
import processes  # noqa: E402
import reuse_cost  # noqa: E402
import tracking_cost  # noqa: E402

PACKAGES = ("numpy", "torch", "tensorflow", "mlflow", "hydra-core", "pandas", "scikit-learn")


def meta() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True
    ).stdout.strip()
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "git_commit": commit,
        "load_avg_start": list(os.getloadavg()),
        "env": {
            k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OMP_NUM_THREADS") if k in os.environ
        },
    }


def _ratio(value: float | None, target: float, op: str = "<=") -> dict[str, Any]:
    ok = None if value is None else (value <= target if op == "<=" else value >= target)
    return {"value": value, "target": target, "op": op, "ok": ok}


def ratios(fig: dict[str, Any]) -> dict[str, dict[str, Any]]:
    r: dict[str, dict[str, Any]] = {}
    for prob, by in fig.get("per_step", {}).items():
        np_us = by["numpy"]["us_per_step"]
        if "tensorflow" in by:
            r[f"{prob}/tensorflow_compiled_over_numpy"] = _ratio(
                by["tensorflow"]["us_per_step"] / np_us, 2.0
            )
        if "torch" in by:
            r[f"{prob}/torch_over_numpy"] = _ratio(by["torch"]["us_per_step"] / np_us, 8.0)
    t = fig.get("tracking")
    if t:
        r["tracking/loop_on_over_off"] = _ratio(t["loop_s_on"] / t["loop_s_off"], 1.10)
        r["tracking/naive_log_metric_over_batched_per_value"] = _ratio(
            t["us_per_value_naive_log_metric"] / t["us_per_value_batched"], 15.0, ">="
        )
    s = fig.get("startup")
    if s and "numpy" in s["backends"]:
        r["startup/numpy_run_over_bare_import"] = _ratio(
            s["backends"]["numpy"]["wall_s"] / s["bare_import"]["wall_s"], 1.5
        )
    w = fig.get("sweep")
    if w:
        r["sweep/joblib_over_sequential"] = _ratio(w["parallel_over_sequential"], 0.65)
    sc = fig.get("scaling", {})
    if sc:
        largest = max(sc.values(), key=lambda v: v["n"])
        r[f"scaling/step_over_two_matvecs_n{largest['n']}"] = _ratio(
            largest["step_over_matvecs"], 1.5
        )
        for v in sc.values():
            if "growth_vs_prev" in v:
                # 10x the rows may cost at most 12x the time (linear, with slack).
                r[f"scaling/growth_to_n{v['n']}"] = _ratio(
                    v["growth_vs_prev"], 1.2 * v["rows_vs_prev"]
                )
    return r


def table(fig: dict[str, Any], rat: dict[str, dict[str, Any]]) -> str:
    lines = []
    for prob, by in fig.get("per_step", {}).items():
        lines.append(f"\n{prob} (µs per step, min / median)")
        np_us = by["numpy"]["us_per_step"]
        for be, v in by.items():
            lines.append(
                f"  {be:<18} {v['us_per_step']:>10.1f} {v['us_per_step_median']:>10.1f}"
                f"   {v['us_per_step'] / np_us:>6.2f}x numpy"
            )
    if "scaling" in fig:
        lines.append("\nscaling, numpy linear, d=100 (ms per step vs two matvecs)")
        for v in fig["scaling"].values():
            lines.append(
                f"  n={v['n']:<9} step {v['step_ms']:>9.3f}  matvecs {v['two_matvecs_ms']:>9.3f}"
                f"  ratio {v['step_over_matvecs']:.2f}"
                + (f"  growth {v['growth_vs_prev']:.1f}x" if "growth_vs_prev" in v else "")
            )
    if "tracking" in fig:
        t = fig["tracking"]
        lines.append(f"\ntracking, numpy fit_linear, {t['steps']} steps")
        lines.append(f"  loop  off {t['loop_s_off']:.4f}s  on {t['loop_s_on']:.4f}s")
        lines.append(f"  run   off {t['run_s_off']:.4f}s  on {t['run_s_on']:.4f}s")
        lines.append(f"  fixed per-run tracking cost {t['fixed_per_run_s']:.3f}s")
        for k, v in t["tracker_calls_s"].items():
            lines.append(f"    {k:<28} {v:.4f}s")
        lines.append(
            f"  µs per metric value: log_metric {t['us_per_value_naive_log_metric']:.1f}"
            f"  batched {t['us_per_value_batched']:.1f}"
        )
    if "startup" in fig:
        s = fig["startup"]
        lines.append(f"\nstart-up (+experiment={s['experiment']}, tracking off, fresh process)")
        for be, v in s["backends"].items():
            heavy = ",".join(m for m, on in v["imports"].items() if on) or "-"
            lines.append(f"  {be:<12} {v['wall_s']:.3f}s   imports: {heavy}")
        lines.append(
            f"  bare import  {s['bare_import']['wall_s']:.3f}s   {s['bare_import']['command']}"
        )
        lines.append(f"  bare python  {s['bare_python_s']:.3f}s")
    if "sweep" in fig:
        w = fig["sweep"]
        lines.append(
            f"\nsweep, 12 jobs: sequential {w['sequential_s']:.1f}s  joblib(n_jobs={w['n_jobs']})"
            f" {w['joblib_s']:.1f}s"
        )
    lines.append("\nratios")
    for k, v in rat.items():
        mark = {True: "ok", False: "MISSED", None: "n/a"}[v["ok"]]
        val = "n/a" if v["value"] is None else f"{v['value']:.3f}"
        lines.append(f"  {k:<52} {val:>8}  target {v['op']} {v['target']:<6} {mark}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-sweep", action="store_true", help="skip the slow 12-job sweeps")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the suite runs")
    ap.add_argument("--skip-plain", action="store_true", help="skip gradtrack vs plain loops")
    ap.add_argument("--out", type=Path, default=HERE / "results.json")
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    m = meta()
    fig: dict[str, Any] = {}
    q = args.quick

    def section(name: str, fn, *a, **kw) -> None:
        t0 = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        try:
            fig[name] = fn(*a, **kw)
        except Exception as exc:  # one broken section must not lose the others' figures
            print(f"[bench] {name} FAILED: {exc}", file=sys.stderr)
            m.setdefault("failed_sections", {})[name] = str(exc)[-2000:]
        print(f"[bench] {name} done in {time.perf_counter() - t0:.1f}s", file=sys.stderr)

    section("startup", processes.startup, repeats=1 if q else 3)
    section(
        "per_step",
        measure.per_step,
        steps=20 if q else 500,
        eager_steps=2 if q else 20,
        repeats=2 if q else 5,
    )
    section(
        "scaling",
        measure.scaling,
        sizes=(1000, 10_000) if q else (10_000, 100_000, 1_000_000),
        d=10 if q else 100,
        target_seconds=0.05 if q else 0.6,
    )
    section(
        "tracking",
        measure.tracking_cost,
        steps=100 if q else 1000,
        repeats=1 if q else 3,
        naive_values=10 if q else 200,
    )
    if not args.skip_sweep:
        section("sweep", processes.sweep)
    section("tracking_cost", tracking_cost.run_all, quick=q)
    if not args.skip_plain:
        section("plain_loops", plain_loops.measure_all, quick=q)
    section("reuse", reuse_cost.run_all, quick=q)  # fingerprint, lookup, make demo twice

    m["load_avg_end"] = list(os.getloadavg())
    m["total_seconds"] = round(time.perf_counter() - t_start, 1)
    m["quick"] = q
    m["note"] = (
        "Timings are minima over repeats. The machine may be shared with other jobs "
        "(see load_avg_*), which inflates absolute times more than ratios."
    )
    rat = ratios(fig)
    rat.update(tracking_cost.ratios(fig.get("tracking_cost", {})))
    rat.update(plain_loops.ratios(fig.get("plain_loops", {})))
    rat.update(reuse_cost.ratios(fig.get("reuse", {})))
    args.out.write_text(json.dumps({"meta": m, "figures": fig, "ratios": rat}, indent=2) + "\n")
    print(plain_loops.table(fig.get("plain_loops", {})))
    print(table(fig, rat))
    print(f"\nwrote {args.out} in {m['total_seconds']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
