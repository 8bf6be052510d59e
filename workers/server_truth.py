"""What a booted server says about its own memory: the pool layout and the KV budget.

Three places state the layout, and a trial reads all of them: the start-up line
(`full_layer_tokens=..., swa_layer_tokens=...`), `/metrics` (`sglang:max_total_num_tokens[_swa]`,
`kv_cache_memory_usage_gb`, `weight_memory_usage_gb`) and `/server_info`
(`internal_states[0].memory_usage`: weight, kvcache, token_capacity[_swa], graph). SGLang's "GB"
are GiB (2^30 bytes). The real server and the simulated one expose the same fields, so this
module does not know which one it reads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from workers.scrape import parse_metrics


@dataclass(frozen=True)
class ServerMemory:
    """The server's own account of its memory right after boot."""

    kvcache_gib: float | None = None  # the KV pools' bytes (SGLang rounds to 3 decimals)
    weight_gib: float | None = None
    graph_gib: dict[str, float] = field(default_factory=dict)  # CUDA graph memory by phase
    full_tokens: int | None = None  # /server_info token_capacity
    swa_tokens: int | None = None
    metrics_full_tokens: int | None = None  # sglang:max_total_num_tokens
    metrics_swa_tokens: int | None = None
    logged_full_tokens: int | None = None  # the start-up line
    logged_swa_tokens: int | None = None
    errors: tuple[str, ...] = ()  # what could not be read, and why

    @property
    def layout(self) -> tuple[int, int | None] | None:
        """The layout, from whichever source stated it (they must agree: see disagreements)."""
        for full, swa in (
            (self.logged_full_tokens, self.logged_swa_tokens),
            (self.metrics_full_tokens, self.metrics_swa_tokens),
            (self.full_tokens, self.swa_tokens),
        ):
            if full is not None:
                return full, swa
        return None

    def disagreements(self) -> list[str]:
        """Sources that state different layouts (a server bug, or a parser that misreads one)."""
        stated = {
            name: (full, swa)
            for name, full, swa in (
                ("start-up line", self.logged_full_tokens, self.logged_swa_tokens),
                ("/metrics", self.metrics_full_tokens, self.metrics_swa_tokens),
                ("/server_info", self.full_tokens, self.swa_tokens),
            )
            if full is not None
        }
        if len(set(stated.values())) <= 1:
            return []
        return [f"{name}: full {full}, SWA {swa}" for name, (full, swa) in stated.items()]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["errors"] = list(self.errors)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ServerMemory":
        return cls(**{**data, "errors": tuple(data.get("errors", ()))})


def _int(value: Any) -> int | None:
    return int(value) if value is not None else None


def memory_from_server_info(info: dict[str, Any]) -> dict[str, Any]:
    """The memory fields of a `/server_info` answer (SGLang: internal_states[0].memory_usage)."""
    states = info.get("internal_states") or [{}]
    usage = (states[0] or {}).get("memory_usage") or {}
    graph = usage.get("graph") or {}
    return {
        "kvcache_gib": usage.get("kvcache"),
        "weight_gib": usage.get("weight"),
        "graph_gib": {str(k): float(v) for k, v in graph.items()} if isinstance(graph, dict) else {},
        "full_tokens": _int(usage.get("token_capacity")),
        "swa_tokens": _int(usage.get("token_capacity_swa")),
    }


def memory_from_metrics(text: str) -> dict[str, Any]:
    values = parse_metrics(text)
    return {
        "metrics_full_tokens": _int(values.get("sglang:max_total_num_tokens")),
        "metrics_swa_tokens": _int(values.get("sglang:max_total_num_tokens_swa")),
        "kv_metric_gib": values.get("sglang:kv_cache_memory_usage_gb"),
        "weight_metric_gib": values.get("sglang:weight_memory_usage_gb"),
    }


def read_server_memory(
    base_url: str, logged: tuple[int, int | None] | None, timeout_s: float = 10.0, keep: Path | None = None
) -> ServerMemory:
    """Ask a ready server; never raises (what it could not read is listed in `errors`).

    `keep`: a path prefix to save the raw answers at (`.server_info.json`, `.metrics.txt`), so a
    report can show what the server said, not only what we parsed from it.
    """
    fields: dict[str, Any] = {}
    errors: list[str] = []
    with httpx.Client(timeout=timeout_s) as client:
        try:
            response = client.get(f"{base_url}/server_info")
            response.raise_for_status()
            _keep(keep, ".server_info.json", response.text)
            fields.update(memory_from_server_info(response.json()))
        except (httpx.HTTPError, ValueError) as exc:
            errors.append(f"/server_info: {exc}")
        try:
            response = client.get(f"{base_url}/metrics")
            response.raise_for_status()
            _keep(keep, ".metrics.txt", response.text)
            from_metrics = memory_from_metrics(response.text)
        except (httpx.HTTPError, ValueError) as exc:
            errors.append(f"/metrics: {exc}")
            from_metrics = {}
    # /server_info is the fuller source; the metric gauges fill in where it is missing.
    kv_metric, weight_metric = from_metrics.pop("kv_metric_gib", None), from_metrics.pop("weight_metric_gib", None)
    fields.update(from_metrics)
    if fields.get("kvcache_gib") is None:
        fields["kvcache_gib"] = kv_metric
    if fields.get("weight_gib") is None:
        fields["weight_gib"] = weight_metric
    if logged is not None:
        fields["logged_full_tokens"], fields["logged_swa_tokens"] = logged
    return ServerMemory(**fields, errors=tuple(errors))


def _keep(prefix: Path | None, suffix: str, text: str) -> None:
    if prefix is None:
        return
    try:
        Path(f"{prefix}{suffix}").write_text(text, encoding="utf-8")
    except OSError:
        pass  # a full disk must not fail the trial; the parsed fields are what matter
