"""Booting the next trial's server while the last one's replay drains (`--boot-ahead`).

A GPU set serves one trial's measurement at a time. Two servers cannot simply share it: SGLang sizes
its KV pools from the memory free when its scheduler starts (the headroom it leaves is the free memory
before the weights load x (1 - mem_fraction_static)), so a server that probes memory while another still
holds the GPU gets a smaller budget and would measure another configuration. But most of a boot comes
before that probe and holds no more than a CUDA context: process start, imports, spawning the scheduler
(~42 s of a ~47 s warm boot of SGLang 0.5.17 on an H200, docs/real-gpu/boot-ahead.md); loading weights,
allocating the pools and capturing graphs come after it.

So the next server starts when the running replay's estimated time left (from the last replay's duration on
the set, a study replaying one workload, and from the requests still out) falls under a lead shorter than
that first part (learned from the GPU set's own boots), and the early boot is checked against the set's
solo boots: the memory free at its probe (`Load weight begin. avail mem=...`, watched while it boots, so a
probe that saw the last server is stopped before it captures graphs) and the KV budget it allocated. A
boot that fails either check, or fails at all, is thrown away and booted again once the set is free:
an early boot never changes what a trial measures, at worst it saves nothing.
"""

from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

PROBE_LINE = re.compile(r"Load weight begin\. avail mem=([0-9.]+) GB")
LEAD_SHARE = 0.6  # start this share of the probe time before the drain's end: margin for a late estimate
AVAIL_TOLERANCE_GIB = 1.0  # a solo boot's free memory varies by a few hundred MB (CUDA context, caches)
BUDGET_TOLERANCE = 0.005  # SGLang rounds the pools' GiB to 3 decimals; a neighbour costs GiBs
MIN_FINISHED = 3  # finished requests before a typical duration is believed


class BootOverlapped(Exception):
    """An early boot probed GPU memory while the last server still held it."""


def probed_avail_gib(log: str) -> float | None:
    """The free GPU memory (GiB) the server saw just before loading weights, from its log."""
    match = PROBE_LINE.search(log)
    return float(match.group(1)) if match else None


@dataclass(frozen=True)
class EarlyBoot:
    """How a trial's boot overlapped the previous trial on its GPUs."""

    started_before_free_s: float  # the server started this long before its GPUs were free
    ready_after_free_s: float  # and was ready this long after (0: first): the boot's cost the study saw
    rebooted: str = ""  # why the early boot was thrown away and the server booted again once free

    def describe(self, boot_s: float | None) -> str:
        if self.rebooted:
            return f"booted early, but {self.rebooted}: booted again once they were free"
        whole = f" of its {boot_s:.1f} s boot" if boot_s is not None else ""
        return (f"booted {self.started_before_free_s:.1f} s before the last trial freed its GPUs: "
                f"{self.ready_after_free_s:.1f} s{whole} showed")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EarlyBoot":
        return cls(**data)


class GpuSetRecord:
    """What the solo boots on one GPU set showed: when a boot probes memory, how much is free, the KV budget."""

    def __init__(self, lead_share: float = LEAD_SHARE) -> None:
        self._lock = threading.Lock()
        self.lead_share = lead_share  # math.inf: boot as soon as the holder measures (tests the guard)
        self.probe_s: float | None = None  # process start to the memory probe, the shortest seen
        self.avail_gib: float | None = None  # free memory at the probe, the most seen
        self.kvcache_gib: float | None = None  # the KV pools' size, the most seen
        self._replay_s: dict[str, float] = {}  # workload -> its last replay's wall seconds on this set

    def learn_probe(self, seconds: float, avail_gib: float) -> None:
        with self._lock:
            self.probe_s = seconds if self.probe_s is None else min(self.probe_s, seconds)
            self.avail_gib = avail_gib if self.avail_gib is None else max(self.avail_gib, avail_gib)

    def learn_replay(self, workload: str, seconds: float) -> None:
        with self._lock:
            self._replay_s[workload] = seconds

    def replay_s(self, workload: str) -> float | None:
        """How long `workload` last took to replay here (a study replays one workload at every ratio)."""
        with self._lock:
            return self._replay_s.get(workload)

    def learn_budget(self, kvcache_gib: float | None) -> None:
        if kvcache_gib is None:
            return
        with self._lock:
            self.kvcache_gib = kvcache_gib if self.kvcache_gib is None else max(self.kvcache_gib, kvcache_gib)

    def lead_s(self) -> float | None:
        """How long before the drain's end the next server may start (None: no solo boot seen yet)."""
        if math.isinf(self.lead_share):
            return math.inf
        with self._lock:
            return None if self.probe_s is None else self.lead_share * self.probe_s

    def probe_overlapped(self, avail_gib: float) -> str | None:
        with self._lock:
            if self.avail_gib is not None and avail_gib < self.avail_gib - AVAIL_TOLERANCE_GIB:
                return (f"its memory probe saw {avail_gib:.2f} GB free where a solo boot on these GPUs saw "
                        f"{self.avail_gib:.2f} GB (the last server still held them)")
        return None

    def budget_overlapped(self, kvcache_gib: float | None) -> str | None:
        with self._lock:
            if kvcache_gib is None or self.kvcache_gib is None:
                return None
            if kvcache_gib < self.kvcache_gib * (1 - BUDGET_TOLERANCE):
                return (f"its KV pools got {kvcache_gib:.3f} GiB where a solo boot on these GPUs got "
                        f"{self.kvcache_gib:.3f} GiB")
        return None


class DrainClock:
    """When the replay will end: from its start and the last replay of the same workload's length, and,
    once every request is sent, from its last request out plus a typical request's duration (the 75th
    percentile of those finished), all on this process's wall clock (a simulated server's runs faster)."""

    def __init__(self) -> None:
        self._in_flight: dict[int, float] = {}  # request index -> sent at
        self._durations: list[float] = []
        self._sent = 0
        self._total: int | None = None
        self.started: float | None = None  # the first request out
        self.ended: float | None = None  # the last one back

    def sent(self, index: int, total: int, now: float) -> None:
        self._in_flight[index] = now
        self._sent += 1
        self._total = total
        if self.started is None:
            self.started = now

    def finished(self, index: int, now: float) -> None:
        started = self._in_flight.pop(index, None)
        if started is not None:
            self._durations.append(now - started)
        if self._total is not None and self._sent >= self._total and not self._in_flight:
            self.ended = now

    @property
    def measuring(self) -> bool:
        """The holder's replay has begun (its server booted, warmed up)."""
        return self._total is not None

    def eta_s(self, now: float, prior_s: float | None = None) -> float | None:
        """Seconds left (None: not known yet). `prior_s`, the last replay's duration on these GPUs,
        says it from the start; the live estimate, once there is one, can only push it later."""
        live = self._live_eta_s(now)
        if prior_s is None or self.started is None:
            return live
        by_prior = max(0.0, self.started + prior_s - now)
        return by_prior if live is None else max(live, by_prior)

    def _live_eta_s(self, now: float) -> float | None:
        """From this replay alone: None until every request is sent and a few are back."""
        if self._total is None or self._sent < self._total:
            return None
        if not self._in_flight:
            return 0.0
        if len(self._durations) < MIN_FINISHED:
            return None
        typical = sorted(self._durations)[int(0.75 * (len(self._durations) - 1))]
        return max(0.0, max(self._in_flight.values()) + typical - now)


class Handover:
    """Between the trial holding a GPU set and the next one, booting onto it early.

    The holder reports its replay's requests as they are sent and finish, and releases the set once its
    server is stopped; the next trial waits to boot (the drain's end is within the set's lead, or the
    set is free), then waits for the set to be free before it measures, and checks its boot (`watch`,
    `verify`).
    """

    def __init__(self, record: GpuSetRecord, workload: str) -> None:
        self.record = record
        self.workload = workload  # what the holder replays
        self._clock = DrainClock()
        self._lock = threading.Lock()
        self._free = threading.Event()
        self._freed_at: float | None = None
        self._probe_seen = False

    # -- the holder ------------------------------------------------------------------------------
    def sent(self, index: int, total: int) -> None:
        with self._lock:
            self._clock.sent(index, total, time.monotonic())

    def finished(self, index: int) -> None:
        with self._lock:
            self._clock.finished(index, time.monotonic())

    def release(self) -> None:
        """The holder's server is stopped: the GPU set is free."""
        with self._lock:
            self._freed_at = time.monotonic()
            if self._clock.started is not None and self._clock.ended is not None:
                self.record.learn_replay(self.workload, self._clock.ended - self._clock.started)
        self._free.set()

    # -- the next trial --------------------------------------------------------------------------
    @property
    def free(self) -> bool:
        return self._free.is_set()

    @property
    def freed_at(self) -> float | None:
        with self._lock:
            return self._freed_at

    def wait_to_boot(self, poll_s: float = 0.25) -> None:
        """Until the set is free, or the holder's replay will end within the set's lead."""
        while not self._free.wait(poll_s):
            lead = self.record.lead_s()
            with self._lock:
                eta = self._clock.eta_s(time.monotonic(), self.record.replay_s(self.workload))
                measuring = self._clock.measuring
            if lead == math.inf and measuring:
                return
            if lead is not None and eta is not None and eta <= lead:
                return

    def wait_free(self) -> None:
        self._free.wait()

    def watch(self, log: str, elapsed_s: float) -> None:
        """Called while the early server boots: stop it at its memory probe if that saw the last server."""
        if self._probe_seen:
            return
        avail = probed_avail_gib(log)
        if avail is None:
            return
        self._probe_seen = True
        why = self.record.probe_overlapped(avail)
        if why is not None:
            raise BootOverlapped(why)
        if self.free:  # the set was free before the probe: as good as a solo boot, and one to learn from
            self.record.learn_probe(elapsed_s, avail)

    def verify(self, log: str, kvcache_gib: float | None) -> str | None:
        """After the set is free: why this early boot does not count (None: it does)."""
        avail = probed_avail_gib(log)
        if avail is None and kvcache_gib is None:
            return "the server stated neither its free memory at boot nor its KV budget, so an early boot cannot be checked"
        return (self.record.probe_overlapped(avail) if avail is not None else None) or self.record.budget_overlapped(kvcache_gib)


class SoloWatch:
    """Learns the probe time and free memory from a boot that had its GPU set to itself."""

    def __init__(self, record: GpuSetRecord) -> None:
        self.record = record
        self._seen = False

    def __call__(self, log: str, elapsed_s: float) -> None:
        if self._seen:
            return
        avail = probed_avail_gib(log)
        if avail is not None:
            self._seen = True
            self.record.learn_probe(elapsed_s, avail)
