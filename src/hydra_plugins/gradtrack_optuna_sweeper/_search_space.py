"""Hydra sweep overrides → an Optuna search space, and the values to validate up front.

``optimizer.lr=interval(0.01,1.0)``   float in [0.01, 1.0]   (``tag(log, ...)``: log scale,
``tag(int, ...)``: integers)
``epochs=range(100,500,100)``          integer 100, 200, 300, 400 (stop excluded, as in Hydra)
``optimizer=sgd,momentum,adam``       one of the choices (also ``choice(...)``)
Any other override is fixed: every trial gets it as written.

Plain data, no Optuna import: the pre-launch check needs only the bounds and choices.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)

# Above this many bound/choice combinations the pre-launch check varies one
# parameter at a time instead of checking every combination.
MAX_CORNER_JOBS = 64


class SearchSpaceError(ValueError):
    """A sweep override the Optuna sweeper cannot turn into a distribution."""


@dataclass
class Param:
    """One searched parameter. ``key`` is the override key as written (``+a.b``, ``optimizer``)."""

    key: str
    kind: str  # "float" | "int" | "choice"
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: int | None = None
    choices: list[str] = field(default_factory=list)
    source: str = ""  # the override as the user wrote it, for messages

    def corners(self) -> list[str]:
        """The values a trial may take that a config check must accept: bounds or choices."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            return [str(int(self.low)), str(int(self.high))]
        return [repr(float(self.low)), repr(float(self.high))]

    def override(self, value: Any) -> str:
        if self.kind == "float":
            return f"{self.key}={float(value)!r}"
        if self.kind == "int":
            return f"{self.key}={int(value)}"
        return f"{self.key}={value}"

    def distribution(self) -> Any:
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.kind == "float":
            return FloatDistribution(self.low, self.high, log=self.log)
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=self.step or 1)
        return CategoricalDistribution(self.choices)


@dataclass
class SearchSpace:
    params: list[Param]
    fixed: list[str]  # overrides every trial gets unchanged

    def corner_jobs(self) -> list[list[str]]:
        """Override lists covering every bound and choice (see MAX_CORNER_JOBS)."""
        if not self.params:
            return [list(self.fixed)]
        values = [p.corners() for p in self.params]
        total = 1
        for v in values:
            total *= len(v)
        if total <= MAX_CORNER_JOBS:
            combos = list(itertools.product(*values))
        else:  # one parameter at a time, the others at their first value
            base = [v[0] for v in values]
            combos = [tuple(base)]
            for i, v in enumerate(values):
                combos += [tuple(base[:i] + [x] + base[i + 1 :]) for x in v[1:]]
        return [
            [*self.fixed, *(f"{p.key}={x}" for p, x in zip(self.params, combo))] for combo in combos
        ]


def _param(o: Override) -> Param:
    key, value, line = o.get_key_element(), o.value(), o.input_line or ""
    if isinstance(value, IntervalSweep):
        low, high = value.start, value.end
        if low is None or high is None or not low < high:
            raise SearchSpaceError(
                f"{line}: an interval needs start < end, e.g. interval(0.01,1.0)"
            )
        tags = set(value.tags)
        if "log" in tags and low <= 0:
            raise SearchSpaceError(
                f"{line}: a log-scale interval needs start > 0, e.g. tag(log, interval(1e-4,1))"
            )
        kind = "int" if "int" in tags else "float"
        if kind == "int" and (low != int(low) or high != int(high)):
            raise SearchSpaceError(f"{line}: an integer interval needs whole-number bounds")
        return Param(key, kind, low=low, high=high, log="log" in tags, source=line)
    values = list(o.sweep_iterator(transformer=Transformer.encode))
    if not values:
        raise SearchSpaceError(f"{line}: the sweep has no values")
    if isinstance(value, RangeSweep) and not value.shuffle:
        step = value.step
        if all(isinstance(x, int) for x in (value.start, value.stop, step)) and step > 0:
            return Param(key, "int", low=values[0], high=values[-1], step=step, source=line)
    if isinstance(value, ChoiceSweep | RangeSweep):
        choices = [str(x) for x in values]
        if len(set(choices)) != len(choices):
            raise SearchSpaceError(f"{line}: the choices repeat a value")
        return Param(key, "choice", choices=choices, source=line)
    raise SearchSpaceError(f"{line}: this sweep is not supported by the Optuna sweeper")


def parse(
    arguments: list[str], params: dict[str, str] | None, config_loader: Any = None
) -> SearchSpace:
    """Search space from ``hydra.sweeper.params`` plus the command line (which wins)."""
    parser = OverridesParser.create(config_loader=config_loader)
    lines = [f"{k}={v}" for k, v in (params or {}).items()] + list(arguments)
    by_key: dict[str, Override] = {}
    for o in parser.parse_overrides(lines):
        by_key.pop(o.get_key_element(), None)  # a later override replaces an earlier one
        by_key[o.get_key_element()] = o
    searched, fixed = [], []
    for o in by_key.values():
        if o.is_sweep_override():
            searched.append(_param(o))
        else:
            fixed.append(o.input_line or f"{o.get_key_element()}={o.get_value_element_as_str()}")
    return SearchSpace(searched, fixed)
