"""How a trial can fail, and how to tell from a server's log which way it did.

A failed trial is data for the search (an infeasible ratio, a hang at a starved pool), not an
exception that ends the study: every failure is classified, with the log tail that shows why.
"""

from __future__ import annotations

import re
from enum import Enum


class FailureKind(str, Enum):
    BOOT_REFUSED = "boot_refused"  # SGLang refused the layout: SWA pool below window + page
    OUT_OF_MEMORY = "out_of_memory"  # weights or KV do not fit, CUDA OOM
    BOOT_TIMEOUT = "boot_timeout"  # never became ready within the bound
    BOOT_FAILED = "boot_failed"  # exited before ready for another reason (bad flag, import error)
    CRASHED = "crashed"  # the server died while the workload ran
    HANG = "hang"  # requests outstanding, no progress for the hang timeout
    CLIENT_ERROR = "client_error"  # requests failed (HTTP errors, aborted by the server)
    TOO_SLOW = "too_slow"  # the replay overran the trial's time budget (derived from its workload)
    WORKER_LOST = "worker_lost"  # the worker itself died (Ray actor death, node lost)
    INTERNAL_ERROR = "internal_error"  # a bug in the tuner's own worker code (kept as data, reported)

    @property
    def infeasible(self) -> bool:
        """Failures that say the configuration cannot work, rather than the run went wrong."""
        return self in (FailureKind.BOOT_REFUSED, FailureKind.OUT_OF_MEMORY)


class TrialFailure(Exception):
    """Raised inside a worker; caught and turned into a failed TrialResult."""

    def __init__(self, kind: FailureKind, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.log_tail = log_tail


_REFUSAL = re.compile(r"SWA pool \(\d+ tokens\) cannot hold even one request[^\n]*")
_OOM = re.compile(
    r"(CUDA out of memory[^\n]*|OutOfMemoryError[^\n]*|Not enough memory[^\n]*|"
    r"Loaded weights leave no GPU memory[^\n]*|leave no KV memory[^\n]*)"
)


# argparse's refusal of a flag or a --config key ("launch_server.py: error: unrecognized arguments: ...")
_ARG_ERROR = re.compile(r"^[^\n:]{1,80}: error: [^\n]*", re.MULTILINE)
# The last line of a Python traceback: what the server died of.
_EXCEPTION = re.compile(r"^(?:[\w.]+\.)?\w*(?:Error|Exception): [^\n]*", re.MULTILINE)


def classify_boot_log(log: str) -> tuple[FailureKind, str] | None:
    """The failure a start-up log shows, with the line that says so, or None."""
    if match := _REFUSAL.search(log):
        return FailureKind.BOOT_REFUSED, match.group(0)
    if match := _OOM.search(log):
        return FailureKind.OUT_OF_MEMORY, match.group(0)
    if match := _ARG_ERROR.search(log):
        return FailureKind.BOOT_FAILED, f"SGLang rejected its arguments: {match.group(0)}"
    if exceptions := _EXCEPTION.findall(log):
        return FailureKind.BOOT_FAILED, exceptions[-1]
    return None


def crash_line(log: str) -> str | None:
    """The exception a server died of: its log's last exception line (SGLang's own words, e.g.
    `torch.AcceleratorError: CUDA error: device-side assert triggered`), or None."""
    exceptions = _EXCEPTION.findall(log)
    return exceptions[-1].strip() if exceptions else None


_LAYOUT = re.compile(r"full_layer_tokens=(\d+), swa_layer_tokens=(\d+)")
_MAX_TOTAL = re.compile(r"max_total_num_tokens=(\d+)")


def parse_pool_layout(log: str) -> tuple[int, int | None] | None:
    """(full tokens, SWA tokens) from SGLang's start-up lines; SWA is None without a hybrid pool."""
    if match := _LAYOUT.search(log):
        return int(match.group(1)), int(match.group(2))
    if match := _MAX_TOTAL.search(log):
        return int(match.group(1)), None
    return None
