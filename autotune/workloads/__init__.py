"""Workloads the replay sends: random-ids like bench_serving, ShareGPT-style files, traces (Mooncake JSONL,
Azure and BurstGPT CSV), presets, mixes of these, and length histograms (a server's own)."""

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
from autotune.workloads.csv_trace import CSV_FORMATS, load_csv_trace
from autotune.workloads.histogram import histogram_workload
from autotune.workloads.mix import MixPart, build_mix
from autotune.workloads.presets import (
    PRESETS,
    Preset,
    get_preset,
    load_dataset_file,
    load_workload_yaml,
    parse_workload_arg,
)
from autotune.workloads.random_ids import random_ids_requests, random_ids_workload
from autotune.workloads.slicing import parse_duration, slice_trace
from autotune.workloads.sharegpt import CHARS_PER_TOKEN, estimate_tokens, load_sharegpt, read_json_records
from autotune.workloads.spec import RequestSpec, Workload
from autotune.workloads.trace import TRACE_KEYS, load_trace

__all__ = [
    "CHARS_PER_TOKEN",
    "CSV_FORMATS",
    "MixPart",
    "build_mix",
    "histogram_workload",
    "load_csv_trace",
    "parse_duration",
    "slice_trace",
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
