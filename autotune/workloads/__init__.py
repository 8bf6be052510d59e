"""Workloads the replay sends: random-ids like bench_serving, ShareGPT-style files, traces, presets."""

from autotune.workloads.arrival import (
    Arrival,
    MaxConcurrency,
    PoissonRate,
    TraceTimes,
    WorkloadError,
    arrival_from_dict,
    arrival_to_dict,
    concurrency_limit,
    describe_arrival,
    send_offsets,
)
from autotune.workloads.presets import (
    PRESETS,
    Preset,
    get_preset,
    load_dataset_file,
    load_workload_yaml,
    parse_workload_arg,
)
from autotune.workloads.random_ids import random_ids_requests, random_ids_workload
from autotune.workloads.sharegpt import CHARS_PER_TOKEN, estimate_tokens, load_sharegpt, read_json_records
from autotune.workloads.spec import RequestSpec, Workload
from autotune.workloads.trace import TRACE_KEYS, load_trace

__all__ = [
    "CHARS_PER_TOKEN",
    "PRESETS",
    "TRACE_KEYS",
    "Arrival",
    "MaxConcurrency",
    "PoissonRate",
    "Preset",
    "RequestSpec",
    "TraceTimes",
    "Workload",
    "WorkloadError",
    "arrival_from_dict",
    "arrival_to_dict",
    "concurrency_limit",
    "describe_arrival",
    "estimate_tokens",
    "get_preset",
    "load_dataset_file",
    "load_sharegpt",
    "load_trace",
    "load_workload_yaml",
    "parse_workload_arg",
    "random_ids_requests",
    "random_ids_workload",
    "read_json_records",
    "send_offsets",
]
