"""Production traces as CSV: the Azure LLM inference trace and BurstGPT.

Two published formats, told apart by their header row:

- **Azure LLM inference trace** (Azure Public Dataset, 2023 and 2024 releases):
  ``TIMESTAMP,ContextTokens,GeneratedTokens``. ``TIMESTAMP`` is a date-time such as
  ``2023-11-16 18:15:46.6805900`` (seven fractional digits and a ``+00:00`` offset are fine) or a
  number of seconds. ``ContextTokens`` is the prompt length, ``GeneratedTokens`` the output length.
- **BurstGPT**: ``Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type``.
  ``Timestamp`` is seconds from the trace's start; ``Model`` and ``Log Type`` can filter rows
  (``model: ChatGPT``, ``log_type: Conversation log``). BurstGPT logs failed requests with 0
  response tokens: they are an error unless ``drop_zero_lengths`` is set.

Each row is one request, sent at its offset from the first row (``/ speedup``) as random token
ids of the given lengths with ``ignore_eos``, like the Mooncake replay in :mod:`trace`. Rows must
be in time order; a row that goes back in time, lacks a column, or has a length below 1 is an
error naming the file and line. Windows, sampling and speed-up: :mod:`slicing`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from autotune.workloads.arrival import TraceTimes, WorkloadError
from autotune.workloads.spec import RequestSpec, Workload

__all__ = ["CSV_FORMATS", "CsvFormat", "detect_csv_format", "load_csv_trace"]


def _azure_time(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    stamp = datetime.fromisoformat(text.strip())
    # Naive stamps are read as UTC: local time would shift offsets across a DST change.
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)).timestamp()


@dataclass(frozen=True)
class CsvFormat:
    name: str
    time: str
    prompt: str
    output: str
    parse_time: Callable[[str], float]
    filters: tuple[tuple[str, str], ...] = ()  # (option name, column)

    @property
    def required(self) -> tuple[str, ...]:
        return (self.time, self.prompt, self.output)


CSV_FORMATS: dict[str, CsvFormat] = {
    "azure": CsvFormat("azure", "TIMESTAMP", "ContextTokens", "GeneratedTokens", _azure_time),
    "burstgpt": CsvFormat(
        "burstgpt", "Timestamp", "Request tokens", "Response tokens", float,
        filters=(("model", "Model"), ("log_type", "Log Type")),
    ),
}


def _norm(column: str) -> str:
    return column.strip().lower()


def detect_csv_format(path: Path, header: list[str]) -> CsvFormat:
    """The format whose columns the header has; else an error listing what each format needs."""
    have = {_norm(c) for c in header}
    best, best_missing = None, None
    for fmt in CSV_FORMATS.values():
        missing = [c for c in fmt.required if _norm(c) not in have]
        if not missing:
            return fmt
        if best_missing is None or len(missing) < len(best_missing):
            best, best_missing = fmt, missing
    assert best is not None and best_missing is not None
    expected = "; ".join(f"{f.name}: {','.join(f.required)}" for f in CSV_FORMATS.values())
    raise WorkloadError(
        f"{path}:1: the CSV header {header} lacks column(s) {best_missing} (closest format: {best.name}); "
        f"a trace CSV needs the columns of one of: {expected}"
    )


def _length(value: str | None, column: str, where: str) -> int:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        number = None
    if number is None or number != int(number):
        raise WorkloadError(f"{where}: {column!r} must be a whole number of tokens, got {value!r}")
    return int(number)


def load_csv_trace(
    path: str | Path,
    *,
    name: str | None = None,
    speedup: float = 1.0,
    warmup: int = 1,
    seed: int = 1,
    model: str | None = None,
    log_type: str | None = None,
    drop_zero_lengths: bool = False,
) -> Workload:
    """The whole trace as a :class:`TraceTimes` workload (cut it with :func:`slicing.slice_trace`)."""
    path = Path(path)
    try:
        handle = path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise WorkloadError(f"cannot read workload file {path}: {exc.strerror or exc}") from None
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            raise WorkloadError(f"{path}: the file is empty; a trace CSV starts with a header row")
        fmt = detect_csv_format(path, header)
        column = {_norm(c): k for k, c in enumerate(header)}
        wanted = {key: value for key, value in (("model", model), ("log_type", log_type)) if value is not None}
        unsupported = sorted(set(wanted) - {option for option, _ in fmt.filters})
        if unsupported:
            raise WorkloadError(f"{path}: {unsupported} filter(s) apply to BurstGPT traces, and this is a {fmt.name} trace")
        filters = [(column[_norm(col)], wanted[opt], col) for opt, col in fmt.filters if opt in wanted]
        for _, _, col in filters:
            if _norm(col) not in column:
                raise WorkloadError(f"{path}:1: filtering on {col!r} needs that column; the header is {header}")
        rows: list[tuple[float, int, int]] = []
        previous: tuple[float, int] | None = None
        dropped = 0
        for row in reader:
            line = reader.line_num
            where = f"{path}:{line}"
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) < len(header):
                raise WorkloadError(f"{where}: {len(row)} field(s), the header has {len(header)}")
            if any(row[k].strip() != value for k, value, _ in filters):
                continue
            raw_time = row[column[_norm(fmt.time)]]
            try:
                t = fmt.parse_time(raw_time)
            except ValueError:
                raise WorkloadError(
                    f"{where}: {fmt.time!r} must be a date-time (2023-11-16 18:15:46.68) or seconds, got {raw_time!r}"
                ) from None
            prompt = _length(row[column[_norm(fmt.prompt)]], fmt.prompt, where)
            output = _length(row[column[_norm(fmt.output)]], fmt.output, where)
            if prompt < 1 or output < 1:
                if drop_zero_lengths:
                    dropped += 1
                    continue
                raise WorkloadError(
                    f"{where}: {fmt.prompt!r} and {fmt.output!r} must be >= 1, got {prompt} and {output} "
                    "(a failed request?); set drop_zero_lengths: true to skip such rows"
                )
            if previous is not None and t < previous[0]:
                raise WorkloadError(
                    f"{where}: {fmt.time!r} {raw_time.strip()!r} is earlier than line {previous[1]}'s; "
                    "a trace must be sorted by time"
                )
            previous = (t, line)
            rows.append((t, prompt, output))
    if not rows:
        what = f" matching {wanted}" if wanted else ""
        raise WorkloadError(f"{path}: the trace has no requests{what}")
    t0 = rows[0][0]
    requests = tuple(
        RequestSpec(index=i, prompt_len=p, output_len=o, arrival_s=t - t0) for i, (t, p, o) in enumerate(rows)
    )
    source = {
        "kind": f"{fmt.name}-trace", "path": str(path), "model": model, "log_type": log_type,
        "dropped_zero_length_rows": dropped,
    }
    return Workload(
        name=name or path.stem, requests=requests, arrival=TraceTimes(speedup), warmup=warmup, seed=seed,
        source=source,
    )
