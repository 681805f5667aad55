"""Search-space specs: ``--space KEY=SPEC`` and the spaces the sweeps declare.

KEY is any configuration key (``python -m sevlm.train --print-config``); SPEC is

* ``log:LO:HI``: float, log-uniform (LO > 0);  ``float:LO:HI``: float, uniform;
* ``int:LO:HI``: integer, both ends included;
* ``choice:A,B,...``: categorical (``true``/``false``, numbers and words);
* ``off``: not searched (the value comes from the preset or ``--set``).

Whether a value is allowed for the model (e.g. the emotion encoder's depth) is not checked
here but by ``sevlm.config.validate`` on the trial configurations the space gives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sweeps import SweepError


@dataclass(frozen=True)
class ParamSpec:
    key: str
    kind: str  # "log", "float", "int", "choice"
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()

    def text(self) -> str:
        if self.kind == "choice":
            return "choice:" + ",".join(format_value(c) for c in self.choices)
        low, high = (int(self.low), int(self.high)) if self.kind == "int" else (self.low, self.high)
        return f"{self.kind}:{low}:{high}"

    def distribution(self):
        import optuna

        if self.kind == "log":
            return optuna.distributions.FloatDistribution(self.low, self.high, log=True)
        if self.kind == "float":
            return optuna.distributions.FloatDistribution(self.low, self.high)
        if self.kind == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high))
        return optuna.distributions.CategoricalDistribution(list(self.choices))

    def contains(self, value: Any) -> bool:
        if self.kind == "choice":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and int(value) != value:
            return False
        return self.low <= value <= self.high

    def ends(self) -> tuple[Any, Any]:
        """The lowest and highest value (the first and last choice)."""
        if self.kind == "choice":
            return self.choices[0], self.choices[-1]
        if self.kind == "int":
            return int(self.low), int(self.high)
        return self.low, self.high


def format_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _parse_value(text: str) -> Any:
    t = text.strip()
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    if t.lower() in ("none", "null"):
        return None
    try:
        return int(t)
    except ValueError:
        pass
    try:
        return float(t)
    except ValueError:
        return t


def parse_param_spec(key: str, text: str) -> ParamSpec | None:
    """``log:0.1:10`` -> ParamSpec; ``off`` -> None. Raises SweepError on bad syntax."""
    t = text.strip()
    if t.lower() == "off":
        return None
    kind, _, rest = t.partition(":")
    kind = kind.lower()
    if kind in ("log", "float", "int"):
        parts = rest.split(":")
        if len(parts) != 2:
            raise SweepError(f"--space {key}={text}: expected {kind}:LOW:HIGH")
        try:
            low, high = (int(p) for p in parts) if kind == "int" else (float(p) for p in parts)
        except ValueError:
            raise SweepError(f"--space {key}={text}: LOW and HIGH must be numbers") from None
        if not (math.isfinite(low) and math.isfinite(high)):
            raise SweepError(f"--space {key}={text}: LOW and HIGH must be finite")
        if kind == "int" and low > high:
            raise SweepError(f"--space {key}={text}: empty range (LOW {low} > HIGH {high})")
        if kind != "int" and low >= high:
            raise SweepError(
                f"--space {key}={text}: empty range (LOW {low} >= HIGH {high}); "
                f"use choice:{format_value(low)} to fix a value"
            )
        if kind == "log" and low <= 0:
            raise SweepError(f"--space {key}={text}: a log range needs LOW > 0")
        return ParamSpec(key, kind, float(low), float(high))
    if kind == "choice":
        values = tuple(_parse_value(v) for v in rest.split(",") if v.strip() != "")
        if not values:
            raise SweepError(f"--space {key}={text}: choice needs at least one value")
        if len(set(map(repr, values))) != len(values):
            raise SweepError(f"--space {key}={text}: repeated choice")
        return ParamSpec(key, "choice", choices=values)
    raise SweepError(f"--space {key}={text}: unknown kind {kind!r}; use log:, float:, int:, choice: or off")


def parse_space(texts: dict[str, str]) -> dict[str, ParamSpec]:
    """{key: spec text} -> {key: ParamSpec}, without the keys that are ``off``."""
    specs = {key: parse_param_spec(key, text) for key, text in texts.items()}
    return {key: spec for key, spec in specs.items() if spec is not None}


def check_space(space: dict[str, ParamSpec], base_flat: dict[str, Any]) -> None:
    """Parameters must be configuration keys, with a spec matching the key's type."""
    if not space:
        raise SweepError("the search space is empty (every parameter is 'off')")
    for key, spec in space.items():
        if key not in base_flat:
            from sevlm.config import did_you_mean

            raise SweepError(f"unknown parameter {key!r} in the search space{did_you_mean(key, base_flat)}")
        current = base_flat[key]
        numbers = all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in spec.choices)
        if isinstance(current, bool):
            if spec.kind != "choice" or not all(isinstance(c, bool) for c in spec.choices):
                raise SweepError(f"{key} is a switch: use choice:true,false (got {spec.text()})")
        elif isinstance(current, int):
            if spec.kind in ("log", "float"):
                raise SweepError(f"{key} is an integer: use int:LOW:HIGH or choice: (got {spec.text()})")
            if spec.kind == "choice" and not (numbers and all(isinstance(c, int) for c in spec.choices)):
                raise SweepError(f"{key} is an integer: every choice must be an integer")
        elif isinstance(current, float):
            if spec.kind == "choice" and not numbers:
                raise SweepError(f"{key} is a number: every choice must be a number")
        elif isinstance(current, str) or current is None:
            if spec.kind != "choice":
                raise SweepError(f"{key} is not numeric: use choice:A,B,...")
        else:
            raise SweepError(f"{key} cannot be searched (value {current!r})")


def base_point(space: dict[str, ParamSpec], flat: dict[str, Any]) -> dict[str, Any]:
    """The configuration's own values of the searched parameters."""
    point = {}
    for key, spec in space.items():
        value = flat[key]
        if spec.kind in ("log", "float") and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        point[key] = value
    return point


def corners(space: dict[str, ParamSpec]) -> list[dict[str, Any]]:
    """The all-lowest and the all-highest point: with the paper's point, what is tried
    before a sweep starts to see that every trial's configuration can be built."""
    return [{k: s.ends()[i] for k, s in space.items()} for i in (0, 1)]
