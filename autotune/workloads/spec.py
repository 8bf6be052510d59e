"""Workload specs: what the replay sends, and in what order and rhythm.

A :class:`Workload` holds only lengths (and, for traces, arrival offsets). The
prompt token ids are drawn lazily per request from ``(seed, index)``, so a
1000 x 32k-token workload costs a few kilobytes until it is replayed, and the
same workload always sends the same ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autotune.workloads.arrival import (
    Arrival,
    MaxConcurrency,
    PoissonRate,
    TraceTimes,
    WorkloadError,
    arrival_from_dict,
    arrival_to_dict,
    describe_arrival,
)

__all__ = [
    "Arrival",
    "MaxConcurrency",
    "PoissonRate",
    "RequestSpec",
    "TraceTimes",
    "Workload",
    "WorkloadError",
]

# Token ids are drawn from [_ID_MARGIN, vocab_size - _ID_MARGIN): tokenizers put
# BOS/EOS/PAD and other control tokens at the low ids and added special tokens
# at the top of the vocabulary, and a control token in a prompt can change what
# the model does (stop early, switch chat role) or trip NaN checks.
_ID_MARGIN = 100
# Warm-up requests are capped so that they warm kernels and CUDA graphs without
# filling the KV pools the measured run is about to use.
_WARMUP_PROMPT_CAP = 256
_WARMUP_OUTPUT_CAP = 16


@dataclass(frozen=True)
class RequestSpec:
    """One request: prompt length and ``max_new_tokens``.

    With ``ignore_eos`` (the replay's default, as in bench_serving) the server
    generates exactly ``output_len`` tokens. ``prompt_text`` is informational
    (ShareGPT) and never persisted or compared: the replay sends token ids.
    """

    index: int
    prompt_len: int
    output_len: int
    arrival_s: float | None = None
    prompt_text: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.prompt_len < 1 or self.output_len < 1:
            raise WorkloadError(
                f"request {self.index}: prompt_len and output_len must be >= 1, "
                f"got {self.prompt_len} and {self.output_len}"
            )
        if self.arrival_s is not None and self.arrival_s < 0:
            raise WorkloadError(f"request {self.index}: arrival_s must be >= 0, got {self.arrival_s}")


@dataclass(frozen=True)
class Workload:
    """A named, reproducible request set plus its arrival process.

    ``source`` says how the requests were built (e.g. ``{"kind": "random-ids",
    "input_len": 1024, ...}``); for random workloads :meth:`to_dict` stores only
    those parameters and :meth:`from_dict` regenerates identical requests.
    """

    name: str
    requests: tuple[RequestSpec, ...]
    arrival: Arrival
    warmup: int = 0
    seed: int = 0
    source: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "requests", tuple(self.requests))
        object.__setattr__(self, "source", dict(self.source))
        if not self.name:
            raise WorkloadError("a workload needs a non-empty name")
        if not self.requests:
            raise WorkloadError(f"workload {self.name!r} has no requests")
        if self.warmup < 0:
            raise WorkloadError(f"workload {self.name!r}: warmup must be >= 0, got {self.warmup}")
        if not 0 <= self.seed < 2**32:
            raise WorkloadError(f"workload {self.name!r}: seed must be in [0, 2**32), got {self.seed}")
        if isinstance(self.arrival, TraceTimes) and any(r.arrival_s is None for r in self.requests):
            raise WorkloadError(
                f"workload {self.name!r}: TraceTimes arrival needs arrival_s on every request"
            )

    def prompt_ids(self, request: RequestSpec, vocab_size: int = 32000) -> list[int]:
        """Deterministic random prompt ids for ``request``, uniform in [100, vocab_size - 100).

        Seeded from ``(workload seed, request index)`` alone, so ids do not
        depend on which other requests exist or the order they are asked for.
        Independent ids per request also mean no two requests share a prefix,
        so the radix cache cannot shorten prefills (bench_serving's random-ids
        prompts have the same property).
        """
        if vocab_size <= 2 * _ID_MARGIN:
            raise WorkloadError(f"vocab_size must exceed {2 * _ID_MARGIN}, got {vocab_size}")
        # SeedSequence entropy must be non-negative; warm-up requests have negative indices.
        entropy = [self.seed, 0 if request.index >= 0 else 1, abs(request.index)]
        rng = np.random.default_rng(entropy)
        return rng.integers(_ID_MARGIN, vocab_size - _ID_MARGIN, size=request.prompt_len).tolist()

    def warmup_requests(self) -> tuple[RequestSpec, ...]:
        """``warmup`` short requests, indices -1, -2, ..., shaped after the first requests.

        bench_serving warms up with its first request capped at 32 output
        tokens; these are capped harder (256 in / 16 out) and get their own
        ids, so they never prime the prefix cache for a measured request.
        """
        shapes = (self.requests[k % len(self.requests)] for k in range(self.warmup))
        return tuple(
            RequestSpec(
                index=-(k + 1),
                prompt_len=min(src.prompt_len, _WARMUP_PROMPT_CAP),
                output_len=min(src.output_len, _WARMUP_OUTPUT_CAP),
            )
            for k, src in enumerate(shapes)
        )

    @property
    def total_prompt_tokens(self) -> int:
        return sum(r.prompt_len for r in self.requests)

    @property
    def total_output_tokens(self) -> int:
        return sum(r.output_len for r in self.requests)

    def describe(self) -> str:
        """One line, e.g. ``chat: 200 x ~1024 in / ~1024 out, max-concurrency 80``."""
        n = len(self.requests)
        return (
            f"{self.name}: {n} x ~{self.total_prompt_tokens / n:.0f} in / "
            f"~{self.total_output_tokens / n:.0f} out, {describe_arrival(self.arrival)}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form. Random workloads store generator params, others every request.

        ``prompt_text`` is not stored (the replay sends ids, and ShareGPT texts
        would dwarf everything else in a study's record).
        """
        data: dict[str, Any] = {
            "name": self.name,
            "arrival": arrival_to_dict(self.arrival),
            "warmup": self.warmup,
            "seed": self.seed,
            "source": dict(self.source),
        }
        if _regenerate(self.source) != self.requests:
            data["requests"] = [
                [r.prompt_len, r.output_len] + ([] if r.arrival_s is None else [r.arrival_s])
                for r in self.requests
            ]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Workload:
        """Inverse of :meth:`to_dict`; raises :class:`WorkloadError` naming the bad key."""
        try:
            name = data["name"]
            arrival = arrival_from_dict(data["arrival"])
        except KeyError as exc:
            raise WorkloadError(f"workload dict lacks key {exc.args[0]!r}") from None
        source = dict(data.get("source", {}))
        if "requests" in data:
            requests = tuple(_request_from_row(i, row, name) for i, row in enumerate(data["requests"]))
        else:
            regenerated = _regenerate(source)
            if regenerated is None:
                raise WorkloadError(
                    f"workload {name!r}: no 'requests' and source {source!r} cannot regenerate them"
                )
            requests = regenerated
        return cls(
            name=name,
            requests=requests,
            arrival=arrival,
            warmup=int(data.get("warmup", 0)),
            seed=int(data.get("seed", 0)),
            source=source,
        )


def _request_from_row(index: int, row: Any, name: str) -> RequestSpec:
    if not isinstance(row, (list, tuple)) or len(row) not in (2, 3):
        raise WorkloadError(
            f"workload {name!r}: requests[{index}] must be [prompt_len, output_len(, arrival_s)], got {row!r}"
        )
    arrival_s = float(row[2]) if len(row) == 3 else None
    return RequestSpec(index=index, prompt_len=int(row[0]), output_len=int(row[1]), arrival_s=arrival_s)


def _regenerate(source: Mapping[str, Any]) -> tuple[RequestSpec, ...] | None:
    """Requests rebuilt from ``source`` when it is a generator recipe, else None."""
    if source.get("kind") != "random-ids":
        return None
    # Imported here: random_ids builds Workloads, so it imports this module.
    from autotune.workloads.random_ids import random_ids_requests

    keys = ("num_prompts", "input_len", "output_len", "range_ratio", "seed")
    missing = [k for k in keys if k not in source]
    if missing:
        raise WorkloadError(f"random-ids source {dict(source)!r} lacks {missing}")
    return random_ids_requests(**{k: source[k] for k in keys})


def check_same_workload(stored: Mapping[str, Any], workload: Workload, study: str) -> None:
    """Refuse to resume study ``study`` (created with the spec ``stored``) on other traffic under the same name.

    A workload's name keys its study, so a mix or a trace slice edited in place would otherwise add
    trials of new traffic to a study of the old. Compared: the requests' lengths and times, the
    arrival process and the id seed (not ``source``, which holds paths that may move).
    """
    try:
        before = Workload.from_dict(stored)
    except (WorkloadError, TypeError, ValueError):
        return  # a spec this version cannot rebuild: nothing to compare against
    def shape(w: Workload) -> tuple[Any, ...]:
        return (w.arrival, w.seed, tuple((r.prompt_len, r.output_len, r.arrival_s) for r in w.requests))

    if shape(before) != shape(workload):
        raise WorkloadError(
            f"workload {workload.name!r} is not the one study {study!r} was created with (then: "
            f"{before.describe()}; now: {workload.describe()}); give the changed workload another name, "
            "or delete the study to start it afresh"
        )
