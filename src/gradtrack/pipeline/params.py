"""``python -m gradtrack.pipeline.params [--check]``: params.yaml from conf/.

params.yaml holds, per DVC train stage, the knobs ``dvc exp run -S`` changes:
``train.<experiment>.{epochs,seed,optimizer.lr}``. Each stage declares only its own
subtree, so changing one experiment's knob re-runs that experiment alone. The values
start as what Hydra composes for ``+experiment=<name>`` (so ``dvc exp show`` shows the
real numbers); this command writes them, and ``--check`` (run by the tests) fails
when an experiment's conf/ changed and params.yaml did not follow.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

# The knobs each experiment exposes to DVC (dotted config keys).
KNOBS = ("epochs", "seed", "optimizer.lr")

HEADER = """\
# Per-experiment knobs of the DVC train stages (dvc.yaml: train@<experiment> declares
# only params train.<experiment>). Generated from conf/ by
# `python -m gradtrack.pipeline.params`; the values override conf/experiment/<name>.yaml.
#   dvc exp run -S train.fit_linear.optimizer.lr=0.2      # one experiment, one knob
#   dvc exp show --only-changed                           # what differs, per experiment
"""


def pipeline_experiments(dvc_yaml: Path) -> list[str]:
    """The experiments dvc.yaml trains (its ``vars: experiments`` mapping), in order."""
    doc = yaml.safe_load(dvc_yaml.read_text())
    for block in doc.get("vars", []):
        if isinstance(block, dict) and "experiments" in block:
            return list(block["experiments"])
    raise ValueError(f"{dvc_yaml}: no `experiments` under vars")


def composed_knobs(experiment: str, conf_dir: Path) -> dict[str, Any]:
    """KNOBS of ``+experiment=<experiment>`` as Hydra composes conf/, nested."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from gradtrack.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(conf_dir.resolve()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"+experiment={experiment}"])
    out: dict[str, Any] = {}
    for key in KNOBS:
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = OmegaConf.select(cfg, key)
    return out


def render(root: Path) -> str:
    names = pipeline_experiments(root / "dvc.yaml")
    train = {name: composed_knobs(name, root / "conf") for name in names}
    return HEADER + yaml.safe_dump({"train": train}, sort_keys=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gradtrack.pipeline.params")
    parser.add_argument("--root", default=".", help="project root (default: current directory)")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if params.yaml differs from conf/"
    )
    args = parser.parse_args(argv)
    root = Path(args.root)
    path = root / "params.yaml"
    text = render(root)
    if args.check:
        if path.is_file() and path.read_text() == text:
            return 0
        print(
            f"{path}: out of date with conf/ (an experiment's epochs, seed or lr changed); "
            "regenerate it with `python -m gradtrack.pipeline.params` and commit it",
            file=sys.stderr,
        )
        return 1
    path.write_text(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
