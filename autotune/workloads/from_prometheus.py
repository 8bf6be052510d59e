"""A workload from a running SGLang's own metrics, through the Prometheus HTTP API.

SGLang (``--enable-metrics``) counts every finished request in ``sglang:num_requests_total`` and
records its prompt and output lengths in ``sglang:prompt_tokens_histogram`` and
``sglang:generation_tokens_histogram`` (names as in SGLang 0.5.17 and 0.5.23; see
docs/reference/sglang.md, section 5). Over a window ending now, this module asks Prometheus for

- ``sum by (le) (increase(<histogram>_bucket{sel}[W]))``: how many requests fell in each length bucket;
- ``sum(increase(sglang:num_requests_total{sel}[W]))``: how many requests finished;
- ``sum by (instance) (sglang:num_requests_total{sel})`` as a range (``query_range``): which servers
  reported, and for how long within the window;
- the histograms' ``_sum`` / ``_count``: the mean lengths, as a check on the buckets;

and writes a ``histograms:`` workload entry (:mod:`histogram`) whose lengths follow the buckets
and whose requests arrive as a Poisson stream at the rate one server saw (the total over the
servers that reported, unless ``per_server=False``). No prompt is logged or read: only counts.
What the histograms cannot say, it does not invent: prompt and output lengths are drawn
independently, and bursts are smoothed into a Poisson rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import httpx
import yaml

from autotune.workloads.arrival import WorkloadError
from autotune.workloads.slicing import parse_duration

__all__ = ["PrometheusTraffic", "fetch_traffic", "traffic_entry", "write_entry"]

REQUESTS = "sglang:num_requests_total"
PROMPT_HISTOGRAM = "sglang:prompt_tokens_histogram"
OUTPUT_HISTOGRAM = "sglang:generation_tokens_histogram"
_RANGE_POINTS = 240  # samples per series asked of query_range: enough to see when a server reported


@dataclass(frozen=True)
class PrometheusTraffic:
    """What the server(s) saw over the window."""

    url: str
    window_s: float
    end: float  # unix seconds
    selector: str
    requests: float  # finished requests in the window, all servers
    instances: int
    active_s: float  # span within the window in which the request counter had samples
    prompt_buckets: list[tuple[float, float]] = field(default_factory=list)  # (upper bound, count), not cumulative
    output_buckets: list[tuple[float, float]] = field(default_factory=list)
    mean_prompt: float | None = None
    mean_output: float | None = None

    @property
    def total_rate(self) -> float:
        return self.requests / self.active_s

    def rate(self, per_server: bool = True) -> float:
        return self.total_rate / (self.instances if per_server else 1)


def _selector(selector: str | None) -> str:
    text = (selector or "").strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    return "{" + text + "}" if text else ""


class _Client:
    def __init__(self, url: str, timeout_s: float, client: httpx.Client | None) -> None:
        self.url = url.rstrip("/")
        self.http = client or httpx.Client(timeout=timeout_s)
        self.owned = client is None

    def close(self) -> None:
        if self.owned:
            self.http.close()

    def get(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        where = f"{self.url}{path}"
        try:
            response = self.http.get(where, params=params)
        except httpx.HTTPError as exc:
            raise WorkloadError(f"cannot reach Prometheus at {self.url}: {type(exc).__name__}: {exc}") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or "status" not in body:
            raise WorkloadError(
                f"{where} answered HTTP {response.status_code} without a Prometheus API body "
                f"({response.text[:200]!r}); is {self.url} a Prometheus server (its base URL, without /api/v1)?"
            )
        if body["status"] != "success":
            raise WorkloadError(
                f"Prometheus at {self.url} refused {params.get('query')!r}: "
                f"{body.get('errorType', '')}: {body.get('error', '')}"
            )
        result = body.get("data", {}).get("result", [])
        return result if isinstance(result, list) else []


def _buckets(result: list[dict[str, Any]]) -> list[tuple[float, float]]:
    cumulative = sorted((float(r["metric"]["le"]), float(r["value"][1])) for r in result if "le" in r.get("metric", {}))
    out, previous = [], 0.0
    for upper, count in cumulative:
        out.append((upper, max(0.0, count - previous)))
        previous = max(previous, count)
    while len(out) > 1 and out[-1][1] == 0:
        out.pop()
    return out


def _scalar(result: list[dict[str, Any]]) -> float | None:
    if not result:
        return None
    value = float(result[0]["value"][1])
    return value if math.isfinite(value) else None


def fetch_traffic(
    url: str,
    *,
    window: str | float = "1h",
    selector: str | None = None,
    end: float | None = None,
    timeout_s: float = 10.0,
    client: httpx.Client | None = None,
) -> PrometheusTraffic:
    """Ask the Prometheus at ``url`` what SGLang served over ``window`` ending at ``end`` (default: now)."""
    window_s = parse_duration(window, "--window")
    if window_s < 1:
        raise WorkloadError(f"--window must be at least 1s, got {window!r}")
    end = datetime.now(timezone.utc).timestamp() if end is None else end
    sel = _selector(selector)
    span = f"[{int(math.ceil(window_s))}s]"
    api = _Client(url, timeout_s, client)
    try:
        def instant(query: str) -> list[dict[str, Any]]:
            return api.get("/api/v1/query", {"query": query, "time": f"{end:.3f}"})

        step = max(1.0, window_s / _RANGE_POINTS)
        series = api.get("/api/v1/query_range", {
            "query": f"sum by (instance) ({REQUESTS}{sel})", "start": f"{end - window_s:.3f}", "end": f"{end:.3f}",
            "step": f"{step:g}",
        })
        where = f"{url} over the {window} before {datetime.fromtimestamp(end, timezone.utc):%Y-%m-%d %H:%M:%S} UTC"
        if not series:
            raise WorkloadError(
                f"no {REQUESTS}{sel} samples at {where}: is Prometheus scraping SGLang started with --enable-metrics"
                " (and does the selector match)?"
            )
        times = [float(t) for s in series for t, _ in s.get("values", [])]
        active_s = max(step, max(times) - min(times)) if times else window_s
        requests = _scalar(instant(f"sum(increase({REQUESTS}{sel}{span}))")) or 0.0
        if requests < 0.5:
            raise WorkloadError(f"no request finished at {where} ({REQUESTS}{sel} did not grow); pick a busier window")
        buckets = {}
        means = {}
        for key, histogram in (("prompt", PROMPT_HISTOGRAM), ("output", OUTPUT_HISTOGRAM)):
            buckets[key] = _buckets(instant(f"sum by (le) (increase({histogram}_bucket{sel}{span}))"))
            if not buckets[key] or sum(c for _, c in buckets[key]) <= 0:
                raise WorkloadError(
                    f"no {histogram} observations at {where}: SGLang exports it with --enable-metrics "
                    "(0.5.17 and later); this server or selector has none"
                )
            means[key] = _scalar(instant(
                f"sum(increase({histogram}_sum{sel}{span})) / sum(increase({histogram}_count{sel}{span}))"
            ))
    finally:
        api.close()
    return PrometheusTraffic(
        url=url, window_s=window_s, end=end, selector=sel, requests=requests, instances=len(series),
        active_s=active_s, prompt_buckets=buckets["prompt"], output_buckets=buckets["output"],
        mean_prompt=means["prompt"], mean_output=means["output"],
    )


def _bucket_rows(buckets: list[tuple[float, float]]) -> list[list[Any]]:
    return [[upper if math.isinf(upper) or upper != int(upper) else int(upper), round(count, 3)]
            for upper, count in buckets]


def traffic_entry(
    traffic: PrometheusTraffic, *, name: str, num_prompts: int | None = None, per_server: bool = True,
    seed: int = 1, window_text: str | None = None,
) -> dict[str, Any]:
    """The ``histograms:`` workload entry (a plain dict, ready for YAML) for ``traffic``."""
    if num_prompts is None:
        num_prompts = max(1, min(1000, round(traffic.requests / (traffic.instances if per_server else 1))))
    if num_prompts < 1:
        raise WorkloadError(f"--num-prompts must be >= 1, got {num_prompts}")
    rate = traffic.rate(per_server)
    return {
        "name": name,
        "histograms": {
            "prompt_tokens": _bucket_rows(traffic.prompt_buckets),
            "output_tokens": _bucket_rows(traffic.output_buckets),
        },
        "num_prompts": num_prompts,
        "request_rate": round(rate, 6),
        "seed": seed,
        "origin": {
            "prometheus": traffic.url,
            "window": window_text or f"{traffic.window_s:g}s",
            "end": datetime.fromtimestamp(traffic.end, timezone.utc).isoformat(timespec="seconds"),
            "selector": traffic.selector,
            "requests_in_window": round(traffic.requests, 3),
            "servers": traffic.instances,
            "active_s": round(traffic.active_s, 3),
            "request_rate_total": round(traffic.total_rate, 6),
            "rate_is": "per server" if per_server else "all servers",
            "mean_prompt_tokens": None if traffic.mean_prompt is None else round(traffic.mean_prompt, 1),
            "mean_output_tokens": None if traffic.mean_output is None else round(traffic.mean_output, 1),
        },
    }


def write_entry(entry: dict[str, Any], path: Any) -> None:
    header = (
        f"# Built by `autotune workload from-prometheus {entry['origin']['prometheus']} --window "
        f"{entry['origin']['window']}` from SGLang's request-length histograms and request counter.\n"
        "# Give it to --workload (autotune run, plan). docs/workloads.md explains each key.\n"
    )
    text = header + yaml.safe_dump(entry, sort_keys=False, default_flow_style=None, width=110)
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise WorkloadError(f"cannot write {path}: {exc.strerror or exc}") from None
