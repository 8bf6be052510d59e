"""ShareGPT-style datasets without a tokenizer.

Accepted records, one per JSONL line or as elements of one JSON list:

- ShareGPT_V3: ``{"conversations": [{"from": "human", "value": ...},
  {"from": "gpt", "value": ...}, ...]}`` (or ``"conversation"``). As in
  bench_serving, conversations with fewer than two turns are skipped and only
  the first two turns are used: turn 0 is the prompt, turn 1 the completion.
- ``{"prompt": "...", "output_len": 128}`` or ``{"prompt": ..., "completion": ...}``.
- ``{"input_len": 1000, "output_len": 200}`` (lengths only).

Token counts are *estimated* as ``ceil(characters / 4)`` -- the usual ~4
characters per token of English BPE text -- because the tuner runs without the
model's tokenizer. Explicit ``input_len`` / ``output_len`` fields win over the
estimate, and ``fixed_output_len`` (bench_serving ``--sharegpt-output-len``)
wins over both for the output. The replay sends random ids of these lengths,
so the estimate only shapes the length distribution.

Selection follows bench_serving's ``sample_sharegpt_requests``: shuffle with
``random.seed(seed)``, drop prompts or outputs shorter than 2 tokens and, with
``context_len``, requests whose prompt + output exceed it, then keep the first
``num_prompts``. With the same file and seed the shuffle order is bench_serving's;
which rows survive can still differ where the estimate and the tokenizer disagree.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autotune.workloads.arrival import Arrival, PoissonRate, WorkloadError
from autotune.workloads.spec import RequestSpec, Workload

__all__ = ["CHARS_PER_TOKEN", "estimate_tokens", "load_sharegpt", "read_json_records"]

CHARS_PER_TOKEN = 4
# bench_serving's pruning thresholds (sample_sharegpt_requests).
_MIN_LEN = 2
_MIN_FIXED_OUTPUT_LEN = 4


def estimate_tokens(text: str) -> int:
    """Token count estimate for ``text``: ``ceil(len(text) / 4)``; 0 for empty text."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def read_json_records(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """``(location, object)`` for each record of a JSONL file or a JSON list file.

    ``location`` is ``"path:LINE"`` for JSONL and ``"path[K]"`` for the K-th
    element of a JSON list (a file whose first non-blank character is ``[``),
    so that every error can point at the record to fix.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WorkloadError(f"cannot read workload file {path}: {exc.strerror or exc}") from None
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise WorkloadError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
        records = [(f"{path}[{k}]", item) for k, item in enumerate(items)]
    else:
        records = []
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append((f"{path}:{line_no}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise WorkloadError(
                    f"{path}:{line_no}: invalid JSON ({exc.msg}); each line must be one JSON object"
                ) from None
    for where, record in records:
        if not isinstance(record, dict):
            raise WorkloadError(f"{where}: expected a JSON object, got {type(record).__name__}")
    return records


def _length_field(record: Mapping[str, Any], key: str, where: str) -> int | None:
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise WorkloadError(f"{where}: {key!r} must be an integer, got {value!r}")
    return value


def _text_field(value: Any, what: str, where: str) -> str:
    if not isinstance(value, str):
        raise WorkloadError(f"{where}: {what} must be a string, got {type(value).__name__}")
    return value


def _parse_record(
    record: Mapping[str, Any], where: str, fixed_output_len: int | None
) -> tuple[int, int, str | None] | None:
    """``(prompt_len, output_len, prompt_text)``, or None for a conversation of < 2 turns."""
    turns = record.get("conversations", record.get("conversation"))
    if turns is not None:
        if not isinstance(turns, list):
            raise WorkloadError(f"{where}: 'conversations' must be a list of turns")
        if len(turns) < 2:
            return None
        values = []
        for k in (0, 1):
            if not isinstance(turns[k], dict) or "value" not in turns[k]:
                raise WorkloadError(f"{where}: conversation turn {k} needs a 'value' string")
            values.append(_text_field(turns[k]["value"], f"turn {k} 'value'", where))
        prompt, completion = values
        output_len = fixed_output_len or estimate_tokens(completion)
        return estimate_tokens(prompt), output_len, prompt
    if "prompt" not in record and "input_len" not in record:
        raise WorkloadError(
            f"{where}: unrecognised record with keys {sorted(record)}; expected 'conversations', "
            "'prompt' (+ 'output_len' or 'completion') or 'input_len' + 'output_len'"
        )
    prompt = _text_field(record["prompt"], "'prompt'", where) if "prompt" in record else None
    input_len = _length_field(record, "input_len", where)
    if input_len is None:
        input_len = estimate_tokens(prompt or "")
    output_len = fixed_output_len or _length_field(record, "output_len", where)
    if output_len is None:
        if "completion" not in record:
            raise WorkloadError(
                f"{where}: no output length; add 'output_len' or 'completion', or pass fixed_output_len"
            )
        output_len = estimate_tokens(_text_field(record["completion"], "'completion'", where))
    return input_len, output_len, prompt


def load_sharegpt(
    path: str | Path,
    *,
    name: str | None = None,
    num_prompts: int | None = None,
    fixed_output_len: int | None = None,
    context_len: int | None = None,
    seed: int = 1,
    arrival: Arrival = PoissonRate(rate=math.inf),
    warmup: int = 1,
) -> Workload:
    """A workload from a ShareGPT-style file; ``num_prompts=None`` keeps every usable row.

    The default arrival is bench_serving's (all requests at once); pass
    ``MaxConcurrency(n)`` or ``PoissonRate(r)`` for anything else.
    """
    if fixed_output_len is not None and fixed_output_len < _MIN_FIXED_OUTPUT_LEN:
        raise WorkloadError(
            f"fixed_output_len must be >= {_MIN_FIXED_OUTPUT_LEN} (as in bench_serving), got {fixed_output_len}"
        )
    if num_prompts is not None and num_prompts < 1:
        raise WorkloadError(f"num_prompts must be >= 1 (or None for all rows), got {num_prompts}")
    path = Path(path)
    rows = [
        parsed
        for where, record in read_json_records(path)
        if (parsed := _parse_record(record, where, fixed_output_len)) is not None
    ]
    random.Random(seed).shuffle(rows)
    kept = [
        (p, o, text)
        for p, o, text in rows
        if p >= _MIN_LEN and o >= _MIN_LEN and not (context_len and p + o > context_len)
    ][:num_prompts]
    if not kept:
        raise WorkloadError(
            f"{path}: no usable requests (need prompt and output >= {_MIN_LEN} tokens"
            + (f" and prompt + output <= {context_len}" if context_len else "")
            + ")"
        )
    requests = tuple(
        RequestSpec(index=i, prompt_len=p, output_len=o, prompt_text=text)
        for i, (p, o, text) in enumerate(kept)
    )
    source = {
        "kind": "sharegpt",
        "path": str(path),
        "num_prompts": num_prompts,
        "fixed_output_len": fixed_output_len,
        "context_len": context_len,
        "chars_per_token": CHARS_PER_TOKEN,
    }
    return Workload(
        name=name or path.stem, requests=requests, arrival=arrival, warmup=warmup, seed=seed, source=source
    )
