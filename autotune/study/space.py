"""Search spaces: which SGLang flags a study tunes, and their bounds, read from `search_spaces/*.yaml`.

Each file matches a class of models (architectures, MoE or dense); the most specific match (highest
`priority`) wins. A parameter is named by SGLang's flag with underscores (`swa_full_tokens_ratio`
is `--swa-full-tokens-ratio`). `low: feasible` means the smallest ratio SGLang boots with for this
model, GPU and KV budget: infeasible ratios are never proposed.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml

from autotune.models import ModelSpec
from autotune.sglang_facts import RATIO
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "search_spaces"


class SearchSpaceError(ValueError):
    def __init__(self, path: Path | str, key: str | None, problem: str) -> None:
        where = f"{path}: {key}" if key else str(path)
        super().__init__(f"search space {where}: {problem}")


@dataclass(frozen=True)
class FloatParam:
    name: str
    low: float | str  # a number, or "feasible"
    high: float
    log: bool = False

    def distribution(self, feasible_low: float) -> optuna.distributions.BaseDistribution:
        low = feasible_low if self.low == "feasible" else float(self.low)
        if self.name == RATIO:
            low = max(low, feasible_low)  # never propose a ratio SGLang refuses
        if low >= self.high:
            raise ValueError(f"{self.name}: the feasible range is empty ({low} >= {self.high})")
        return optuna.distributions.FloatDistribution(low, self.high, log=self.log)


@dataclass(frozen=True)
class IntParam:
    name: str
    low: int
    high: int
    step: int = 1
    log: bool = False

    def distribution(self, feasible_low: float) -> optuna.distributions.BaseDistribution:
        return optuna.distributions.IntDistribution(self.low, self.high, step=self.step, log=self.log)


@dataclass(frozen=True)
class CategoricalParam:
    name: str
    choices: tuple[Any, ...]

    def distribution(self, feasible_low: float) -> optuna.distributions.BaseDistribution:
        return optuna.distributions.CategoricalDistribution(self.choices)


Param = FloatParam | IntParam | CategoricalParam


@dataclass(frozen=True)
class SearchSpace:
    name: str
    path: str
    priority: int
    architectures: tuple[str, ...]  # empty: any
    moe: bool | None  # None: either
    params: tuple[Param, ...]

    def matches(self, model: ModelSpec) -> bool:
        if self.architectures and model.architecture not in self.architectures:
            return False
        return self.moe is None or self.moe == model.is_moe

    def distributions(self, feasible_low: float) -> dict[str, optuna.distributions.BaseDistribution]:
        return {p.name: p.distribution(feasible_low) for p in self.params}


def _param(path: Path, name: str, spec: Any) -> Param:
    key = f"params.{name}"
    if not isinstance(spec, dict) or "type" not in spec:
        raise SearchSpaceError(path, key, "must be a mapping with a 'type' (float, int or categorical)")
    kind = spec["type"]
    allowed = {"float": {"type", "low", "high", "log"}, "int": {"type", "low", "high", "step", "log"},
               "categorical": {"type", "choices"}}
    if kind not in allowed:
        raise SearchSpaceError(path, f"{key}.type", f"unknown type {kind!r}; use float, int or categorical")
    unknown = set(spec) - allowed[kind]
    if unknown:
        raise SearchSpaceError(path, key, f"unknown keys {sorted(unknown)}; a {kind} parameter takes {sorted(allowed[kind])}")
    try:
        if kind == "categorical":
            choices = spec["choices"]
            if not isinstance(choices, list) or not choices:
                raise SearchSpaceError(path, f"{key}.choices", "must be a non-empty list")
            return CategoricalParam(name, tuple(choices))
        if kind == "int":
            return IntParam(name, int(spec["low"]), int(spec["high"]), int(spec.get("step", 1)), bool(spec.get("log", False)))
        low = spec["low"]
        if low != "feasible" and not isinstance(low, (int, float)):
            raise SearchSpaceError(path, f"{key}.low", f"must be a number or 'feasible', got {low!r}")
        high = float(spec["high"])
    except KeyError as missing:
        raise SearchSpaceError(path, f"{key}.{missing.args[0]}", "is missing") from None
    except (TypeError, ValueError) as bad:
        raise SearchSpaceError(path, key, f"bad value: {bad}") from None
    if name == RATIO and not 0 < high <= 1:
        raise SearchSpaceError(path, f"{key}.high", f"is {high}: the ratio's bounds must lie in (0, 1]")
    if name == RATIO and low != "feasible" and not 0 < float(low) < high:
        raise SearchSpaceError(path, f"{key}.low", f"is {low}: the ratio's low bound must be in (0, high)")
    return FloatParam(name, low, high, bool(spec.get("log", False)))


def load_space(path: Path) -> SearchSpace:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise SearchSpaceError(path, None, f"is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise SearchSpaceError(path, None, "must be a YAML mapping with name, match and params")
    unknown = set(data) - {"name", "priority", "match", "params"}
    if unknown:
        raise SearchSpaceError(path, None, f"unknown top-level keys {sorted(unknown)}")
    params = data.get("params")
    if not isinstance(params, dict) or RATIO not in params:
        raise SearchSpaceError(path, "params", f"must be a mapping that includes {RATIO}")
    match = data.get("match") or {}
    if not isinstance(match, dict) or set(match) - {"architectures", "moe"}:
        raise SearchSpaceError(path, "match", "takes only 'architectures' (a list) and 'moe' (true/false)")
    moe = match.get("moe")
    if moe is not None and not isinstance(moe, bool):
        raise SearchSpaceError(path, "match.moe", f"must be true or false, got {moe!r}")
    return SearchSpace(
        name=str(data.get("name", path.stem)),
        path=str(path),
        priority=int(data.get("priority", 0)),
        architectures=tuple(match.get("architectures") or ()),
        moe=moe,
        params=tuple(_param(path, name, spec) for name, spec in params.items()),
    )


INSTALLED_DIR = Path(sys.prefix) / "share" / "swa-autotune" / "search_spaces"


def search_space_dir() -> Path:
    """$AUTOTUNE_SEARCH_SPACES, else the checkout's search_spaces/, else the installed copy."""
    if "AUTOTUNE_SEARCH_SPACES" in os.environ:
        return Path(os.environ["AUTOTUNE_SEARCH_SPACES"])
    return DEFAULT_DIR if DEFAULT_DIR.is_dir() else INSTALLED_DIR


def select_space(model: ModelSpec, directory: Path | None = None) -> SearchSpace:
    """The highest-priority search space in `directory` that matches the model."""
    directory = directory or search_space_dir()
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise SearchSpaceError(directory, None, "holds no *.yaml search spaces")
    matching = [space for space in map(load_space, files) if space.matches(model)]
    if not matching:
        raise SearchSpaceError(directory, None, f"no search space matches {model.name}; add a default.yaml with `match: {{}}`")
    return max(matching, key=lambda space: space.priority)
