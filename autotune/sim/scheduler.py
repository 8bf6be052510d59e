"""SGLang's scheduler for a hybrid SWA model, reduced to what decides a ratio's fate.

One `step()` is one iteration of SGLang's event loop (managers/scheduler.py): build a prefill batch
from the waiting queue if admission allows (PrefillAdder, mem_cache/prefill_budget.py::SWAPrefillBudget),
otherwise decode the running batch after checking decode memory and retracting requests if it does not
fit (schedule_batch.py). The overlap loop
(SGLang's default; `overlap_schedule`) processes a batch's results after the next round is scheduled: here, a
completed prefill's tree insert waits one round, a finished request stays in the next forward's batch and is
released after it is scheduled, a request retracted with its last forward in flight loses that forward's tokens,
and scheduling reads output counts without the tokens in flight (the engine also receives requests one forward
behind: autotune/sim/engine.py). The rules kept, each from the reference
(docs/reference/sglang.md §4) and the 0.5.17 / 0.5.23 source:

- every prefill token is allocated in both pools;
- admission: full side `extend + min(max_new, 4096) + page < available + evictable - offsets`,
  where offsets reserve the running requests' remaining output; SWA side
  `max(min(extend, chunk) - window, 0) + min(extend + max_new, window) + page < swa free + evictable
  - this round's SWA reservations`. A request that fails waits (and stops the round: FCFS);
- chunked prefill: one request in chunks; chunk = min(chunk budget, full room, SWA room - page); an admitted
  request books its whole min(max_new_tokens, 4096); a chunk cut by SWA room leaves budget, so the round goes on,
  and a second cut request ends the first one's prefill where it was cut (0.5.17, traced on the real server);
- a request's SWA footprint follows autotune/pools/footprint.py, per release (docs/sglang-swa-accounting.md):
  each prefill chunk is inserted into the radix tree (split at the node boundaries the full tree still holds
  from before a retraction), which locks the prompt's last window `L(P)` node by node (used)
  and keeps the older part as evictable cache (0.5.17) or frees it (0.5.23); decode frees only decoded
  tokens more than a window behind, on 0.5.17's global `forward_iter % 128` steps or 0.5.23's
  per-request token trigger, so a running request holds `L(P) + H(j)`, up to about two windows;
- decode out of memory (checked before the step's eviction): retract (fewest outputs first, then
  longest prompt), re-queue at the back; its held slots are freed, its locked prompt becomes evictable,
  then the tree evicts until 20 tokens per request still running are free (retract_decode); a step that
  retracts adds the GPU profile's fitted `retract_step_overhead_ms` once (host work the loop does not hide);
- re-admission (§4): the retracted request's inserted fill (its prompt, and any output re-prefilled
  before) is a prefix hit while tree eviction has taken none of it, so only the rest is re-prefilled
  and only the rest is charged; the hit is locked again at admission. Tree eviction is modelled as
  LRU over cached segments aged by their last insert (a retracted prompt keeps its prefill's age, so
  it is among the first evicted under pressure), and any eviction from a retracted request's prefix
  loses all of it (simplification: SGLang could still match a shorter prefix whose SWA tail lives);
- finished requests' tokens stay in the radix cache (evictable), which usage gauges do not count.

Times are whatever clock the caller uses (virtual seconds in-process, wall seconds in the server).
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass
from typing import Callable

from autotune.pools.footprint import ReleaseRules, decode_free_to, insert_nodes, locked_tail, release_rules
from autotune.sim.pool import Arena, DeviceAssert, TokenPool, arena_pools
from autotune.sim.request import CLIP_MAX_NEW_TOKENS, SimRequest, ceil_page, floor_page
from autotune.sim.round_budget import RoundBudget, reserved_new_tokens
from autotune.sim.tree_lru import TreeLRU
from autotune.sim.timing import DecodeBatch, PrefillChunk, TimingModel


@dataclass(frozen=True)
class SchedulerConfig:
    full_tokens: int
    swa_tokens: int | None  # None: no hybrid pool (one pool for every layer)
    window: int | None
    page_size: int = 1
    chunked_prefill_size: int = 8192
    max_prefill_tokens: int = 16384
    max_running_requests: int = 2048
    decode_log_interval: int = 40
    # SGLang's NewTokenRatioTracker: the share of a running request's remaining output that admission
    # reserves. Starts at SGLANG_INIT_NEW_TOKEN_RATIO (0.7), decays to 0.7 x 0.14 over 600 decode
    # steps, is re-estimated after a retraction ((decoded + 20 per request) / max_new) and reset when
    # idle. A low ratio after a retraction is what lets admission refill the pool at once.
    init_new_token_ratio: float = 0.7
    min_new_token_ratio_factor: float = 0.14
    new_token_ratio_decay_steps: int = 600
    retract_decode_steps: int = 20
    # 0.5.23 reserves all of a fixed-length (ignore_eos) request's remaining output; 0.5.17 scales it
    # by the ratio too (schedule_policy._get_running_request_total_token_offset in each release).
    fixed_length_full_reservation: bool = True
    # 0.5.17 shrinks a request's prefill chunk to whatever SWA room is left whenever its budget does
    # not fit; 0.5.23 only for a request that could never fit ("transient pressure waits"). The
    # 0.5.17 rule re-admits into a full SWA pool, which retracts again: the collapse seen on the H200.
    shrink_chunk_on_transient_swa_pressure: bool = False
    # The release's footprint rules: what a prefill checkpoint frees, the decode eviction cadence.
    rules: ReleaseRules = release_rules()
    # --enable-unified-memory: the arena's bytes and per-token bytes of each side (None: two static pools).
    # 0.5.23 admits against the joint byte budget (SharedSWAPrefillBudget); 0.5.17 died with a
    # device-side assert at the first prefill after a side passed its static cap (measured).
    arena_bytes: int | None = None
    full_token_bytes: int = 0
    swa_token_bytes: int = 0
    joint_admission: bool = True
    crash_beyond_static_caps: bool = False
    # SGLang's overlap scheduler (its default; off: --disable-overlap-schedule) processes a batch's results
    # after the next batch is scheduled, so a completed prefill enters the radix tree one round late: that
    # round's admission still sees the prompt's out-of-window part held, and the next one gets it alone.
    # The engine passes SimServerConfig's (True, SGLang's default); False here keeps a bare scheduler's steps
    # self-contained.
    overlap_schedule: bool = False

    @property
    def min_new_token_ratio(self) -> float:
        return min(self.init_new_token_ratio * self.min_new_token_ratio_factor, 1.0)

    @property
    def hybrid(self) -> bool:
        return self.swa_tokens is not None


@dataclass(frozen=True)
class StepReport:
    """What one forward step did (for logs, metrics and the caller's clocks)."""

    kind: str  # "prefill", "decode", "retract" (all running requests retracted) or "idle"
    start_s: float
    duration_s: float
    batch_size: int
    new_tokens: int = 0  # prefill: extend tokens computed; decode: output tokens emitted
    finished: tuple[SimRequest, ...] = ()
    retracted: tuple[SimRequest, ...] = ()
    emitted: tuple[SimRequest, ...] = ()  # requests that got new output tokens this step
    log_line: str | None = None
    chunks: tuple[int, ...] = ()  # prefill: each request's extend tokens, in batch order

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


@dataclass
class Counters:
    # prompt/generation tokens and requests count once per finished request, as SGLang exports them
    prompt_tokens: int = 0
    generation_tokens: int = 0
    requests: int = 0
    prefill_tokens_computed: int = 0  # every extend token, re-prefills after retraction included
    prefix_hit_tokens: int = 0  # tokens a re-admitted request found in the radix tree (not recomputed)
    retracted_requests: int = 0
    retracted_input_tokens: int = 0
    retracted_output_tokens: int = 0
    last_retracted: int = 0  # gauge sglang:num_retracted_reqs: size of the latest retraction
    decode_steps: int = 0
    prefill_steps: int = 0


class Scheduler:
    def __init__(self, config: SchedulerConfig, timing: TimingModel) -> None:
        self.config = config
        self.timing = timing
        self.arena: Arena | None = None
        if config.arena_bytes is not None and config.hybrid:
            self.arena = arena_pools(config.arena_bytes, config.full_token_bytes, config.swa_token_bytes,
                                     config.full_tokens, config.swa_tokens)
            self.full, self.swa = self.arena.full, self.arena.swa
        else:
            self.full = TokenPool("full", config.full_tokens)
            self.swa = TokenPool("swa", config.swa_tokens) if config.hybrid else None
        self.waiting: deque[SimRequest] = deque()
        self.running: list[SimRequest] = []
        self.chunked: SimRequest | None = None
        self.counters = Counters()
        self.on_finish: Callable[[SimRequest], None] | None = None
        self._log_tokens = 0
        self._log_start_s: float | None = None
        self.gen_throughput = 0.0
        self.last_decode_log: str | None = None
        self.new_token_ratio = config.init_new_token_ratio
        self.forward_ct = 0  # forwards run so far (0.5.17's decode eviction keys on it; the tree's LRU clock)
        self.full_tree = TreeLRU(self.full, holds_node_bounds=True)
        self.swa_tree = TreeLRU(self.swa) if self.swa is not None else None
        self._cached_entries: dict[int, list] = {}  # id(retracted request) -> its prefix's LRU entries
        self._hits: dict[int, int] = {}  # id(request admitted this round) -> its prefix hit
        # completed prefills the overlap loop inserts one round late, with the fill each had then
        self._pending_checkpoints: list[tuple[SimRequest, int]] = []
        # requests whose last token finished them: the overlap loop learns it when it processes that forward's
        # results, after scheduling the next one, so they stay in the running batch one forward longer
        self._pending_releases: list[SimRequest] = []

    # -- queue -------------------------------------------------------------------------------
    def add(self, request: SimRequest) -> None:
        self.waiting.append(request)

    @property
    def idle(self) -> bool:
        return not self.waiting and not self.running and self.chunked is None

    @property
    def window(self) -> int | None:
        return self.config.window if self.config.hybrid else None

    # -- one iteration -----------------------------------------------------------------------
    def step(self, now: float) -> StepReport:
        # The last batch's results are processed after this round is scheduled (overlap loop): after admission, and
        # after a decode's retraction check and allocation.
        batch = self._prefill_batch()
        if batch:
            return self._run_prefill(batch, now)
        if self.running:
            return self._run_decode(now)
        self._process_last_results()
        self.new_token_ratio = self.config.init_new_token_ratio  # the idle loop resets the tracker
        return StepReport("idle", now, 0.0, 0)

    # -- prefill -----------------------------------------------------------------------------
    def _prefill_batch(self) -> list[tuple[SimRequest, int, bool]]:
        """PrefillAdder: (request, extend tokens this step, completes its prefill?)."""
        cfg = self.config
        if len(self.running) >= cfg.max_running_requests and self.chunked is None:
            return []
        budget = RoundBudget(self.full, self.swa, cfg.page_size, self.window,
                         arena=self.arena if cfg.joint_admission else None)
        for r in self.running:  # what each still has to decode, as its output_ids say (the overlap loop's lag)
            ratio = 1.0 if r.ignore_eos and cfg.fixed_length_full_reservation else self.new_token_ratio
            remaining = max(r.max_new_tokens - self._processed_outputs(r), 0)
            budget.total_offset += min(remaining, CLIP_MAX_NEW_TOKENS) * ratio
        rem_input = cfg.max_prefill_tokens
        rem_chunk = cfg.chunked_prefill_size
        batch: list[tuple[SimRequest, int, bool]] = []

        chunk_pending = False
        if self.chunked is not None:  # add_chunked_req: the request in chunks goes first
            req = self.chunked
            room = min(rem_chunk, int(budget.remaining_total), budget.joint_room())
            if self.swa is not None:
                room = min(room, int(budget.remaining_swa) - cfg.page_size)
            left = req.fill_len - req.prefilled
            extend = left if left <= room else floor_page(room, cfg.page_size)
            chunk_pending = extend < left
            if extend > 0:
                batch.append((req, extend, not chunk_pending))
                budget.reserve(extend, 0 if chunk_pending else reserved_new_tokens(req), rem_chunk)
                rem_input -= ceil_page(extend, cfg.page_size)
                rem_chunk -= ceil_page(extend, cfg.page_size)
            if not chunk_pending:
                self.chunked = None

        new_chunked: SimRequest | None = None
        locked: SimRequest | None = None  # the head's prefix hit, locked while admission checks it
        # A round goes on after a truncated request while budget remains: with a chunk cut by SWA room (not by
        # the chunk budget) the next request can be admitted too (PrefillAdder.budget_state, both releases).
        while self.waiting and not chunk_pending:
            if len(self.running) + len(batch) >= cfg.max_running_requests:
                break
            if not budget.has_capacity() or rem_input <= 0 or rem_chunk <= 0:
                break
            req = self.waiting[0]
            if self._lock_prefix(req):  # add_one_req checks under _lock_node(last_node)
                locked = req
            max_new = min(req.remaining_new_tokens, CLIP_MAX_NEW_TOKENS)
            extend = req.fill_len - req.prefilled
            if extend > rem_input and batch:
                break
            total = extend + max_new + cfg.page_size
            if not total < budget.remaining_total:
                break  # NO_TOKEN: the full pool cannot take it now; FCFS, so everyone waits
            chunk_limit: int | None = rem_chunk
            if self.swa is not None:
                needed = budget.swa_tokens(ceil_page(extend, cfg.page_size), max_new, chunk_limit)
                if not needed < budget.remaining_swa:
                    if needed < self.swa.capacity and not cfg.shrink_chunk_on_transient_swa_pressure:
                        break  # the SWA budget fails: the request waits (docs/reference/sglang.md §4)
                    cap = floor_page(int(budget.remaining_swa) - budget.swa_tokens(0, max_new, None), cfg.page_size)
                    if cap <= 0:
                        break
                    chunk_limit = min(chunk_limit, cap)
            if self.arena is not None and not budget.joint_fits(
                total, budget.swa_tokens(ceil_page(extend, cfg.page_size), max_new, chunk_limit)
            ):
                if extend <= chunk_limit or budget.joint_room() <= 0:
                    break  # the joint byte budget fails: the request waits
                chunk_limit = min(chunk_limit, floor_page(budget.joint_room(), cfg.page_size))
            if extend <= chunk_limit:
                paged = ceil_page(extend, cfg.page_size)
                if paged > min(budget.remaining_current, budget.remaining_total):
                    break
                if self.swa is not None and budget.swa_tokens(extend, max_new, chunk_limit) > budget.remaining_swa:
                    break
                self.waiting.popleft()
                locked = None
                batch.append((req, extend, True))
                budget.reserve(extend, reserved_new_tokens(req), chunk_limit)
            else:
                room = min(chunk_limit, int(budget.remaining_total), budget.joint_room())
                if self.swa is not None:
                    room = min(room, int(budget.remaining_swa) - cfg.page_size)
                extend = floor_page(room, cfg.page_size)
                if extend <= 0:
                    break
                self.waiting.popleft()
                locked = None
                if new_chunked is not None:
                    self._end_prefill_truncated(batch, new_chunked)
                batch.append((req, extend, False))
                new_chunked = req
                budget.reserve(extend, 0, chunk_limit)
            rem_input -= ceil_page(extend, cfg.page_size)
            rem_chunk -= ceil_page(extend, cfg.page_size)
        if locked is not None:
            self._unlock_prefix(locked)  # not admitted: its prefix goes back to the tree's evictable part
        if new_chunked is not None:
            self.chunked = new_chunked
        return batch

    @staticmethod
    def _end_prefill_truncated(batch: list[tuple[SimRequest, int, bool]], req: SimRequest) -> None:
        """A second truncated request in one round becomes the scheduler's chunked request
        (`adder.new_chunked_req` is overwritten), so the first one's prefill ends with this chunk: it joins the
        running batch and decodes from a partial prompt (SGLang 0.5.17 under transient SWA pressure; traced on
        the real server: a request cut at 863 of its 1,106 tokens got its next token and was retracted holding
        864). A retraction re-queues it with its whole prompt again."""
        at = next(i for i, (r, _, _) in enumerate(batch) if r is req)
        extend = batch[at][1]
        batch[at] = (req, extend, True)
        req.fill_len = req.prefilled + extend

    def _lock_prefix(self, req: SimRequest) -> bool:
        """match_prefix at re-admission: lock what the tree still holds of the fill (§4)."""
        entries = self._cached_entries.pop(id(req), None)
        if entries is None or req.cached_len <= 0 or req.prefilled:
            return False
        self.full_tree.take(entries[0])
        if self.swa_tree is not None:
            self.swa_tree.take(entries[1])
        req.kv_len = req.prefilled = req.protected = req.cached_len
        req.full_locked, req.swa_locked = req.cached_full, req.cached_swa
        req.tree_nodes = list(req.cached_nodes)
        req.swa_cursor = min(req.swa_cursor, req.cached_len)
        self._hits[id(req)] = req.cached_len
        return True

    def _unlock_prefix(self, req: SimRequest) -> None:
        full, swa = req.full_locked, req.swa_locked
        self.full.cache(full)
        entries = [self.full_tree.add(full, req.tree_access, req), None]
        if self.swa is not None and self.swa_tree is not None:
            self.swa.cache(swa)
            entries[1] = self.swa_tree.add(swa, req.tree_access, req)
        self._cached_entries[id(req)] = entries
        self._hits.pop(id(req), None)
        req.reset_kv()

    def _run_prefill(self, batch: list[tuple[SimRequest, int, bool]], now: float) -> StepReport:
        chunks = [PrefillChunk(extend_len=extend, prefix_len=req.prefilled) for req, extend, _ in batch]
        duration = self.timing.prefill_step_s(chunks)
        end = now + duration
        emitted: list[SimRequest] = []
        finished: list[SimRequest] = []
        new_tokens = 0
        cached_tokens = sum(self._hits.pop(id(req), 0) for req, _, _ in batch)
        self.counters.prefix_hit_tokens += cached_tokens
        for req, extend, done in batch:  # scheduling: the batch's slots are allocated
            if req.scheduled_s is None:
                req.scheduled_s = now
            self._check_static_caps(req, extend)
            self._grow(req, extend)
            req.prefilled += extend
            new_tokens += extend
            self.counters.prefill_tokens_computed += extend
        self._process_last_results()
        for req, extend, done in batch:
            # The chunk goes into the radix tree (stash_chunked_request; after the first output token,
            # cache_unfinished_req / checkpoint_kv_cache): it locks the prompt's last window. Under the overlap
            # loop a completed prefill's insert waits for the next round's scheduling.
            if done and self.config.overlap_schedule:
                self._pending_checkpoints.append((req, req.kv_len))
            else:
                self._checkpoint(req)
            if done:
                req.generated += 1  # the extend's logits give the first output token
                req.last_emit_forward, req.last_emit_tokens = self.forward_ct, 1
                self._log_tokens += 1
                self._emit(req, end)
                emitted.append(req)
                if req.finished:
                    finished.append(req)
                self.running.append(req)
        for req in finished:
            self._finish(req, end)
        self.counters.prefill_steps += 1
        self.forward_ct += 1
        line = (
            f"Prefill batch, #new-seq: {len(batch)}, #new-token: {new_tokens}, #cached-token: {cached_tokens}, "
            f"{self._usage_text()}, #running-req: {len(self.running)}, #queue-req: {len(self.waiting)}"
        )
        return StepReport(
            "prefill", now, duration, len(batch), new_tokens, tuple(finished), (), tuple(emitted), line,
            chunks=tuple(extend for _, extend, _ in batch),
        )

    # -- decode ------------------------------------------------------------------------------
    def _decode_need(self, reqs: list[SimRequest], tokens: int) -> int:
        page = self.config.page_size
        return sum(ceil_page(r.kv_len + tokens, page) - ceil_page(r.kv_len, page) for r in reqs)

    def _decode_fits(self, reqs: list[SimRequest], tokens: int) -> bool:
        need = self._decode_need(reqs, tokens)
        if need > self.full.free_or_evictable:
            return False
        if self.arena is not None and not self.arena.fits(need, need):
            return False
        return self.swa is None or need <= self.swa.free_or_evictable

    def _retract_if_needed(self, tokens: int) -> list[SimRequest]:
        if self._decode_fits(self.running, tokens):
            return []
        # _get_decode_retraction_order: keep most outputs / shortest prompts; pop from the end.
        # A request finished one forward ago (overlap loop) is still in the batch; kept here (simplification: SGLang
        # could retract it, with the most outputs, only after every other request).
        order = sorted(self.running, key=lambda r: (r.finished, self._processed_outputs(r), -r.prompt_len), reverse=True)
        retracted: list[SimRequest] = []
        while order and (not retracted or not self._decode_fits(order, tokens)):
            if len(order) == 1 and retracted:
                break  # SGLang never retracts the last request; it aborts it if it still cannot fit
            req = order.pop()
            self._retract(req)  # frees its KV at once, so the next check sees the room
            retracted.append(req)
            # release_req ends with evict_from_tree_cache(requests left x SGLANG_RETRACT_DECODE_STEPS), after every
            # retracted request: only the shortfall against what is already free (the first, with the most requests
            # left, asks the most).
            want = self.config.retract_decode_steps * len(order)
            for tree in (self.full_tree, self.swa_tree):
                if tree is not None:
                    tree.evict(want - tree.pool.available)
        keep = set(map(id, order))
        self.running = [r for r in self.running if id(r) in keep]
        self.counters.retracted_requests += len(retracted)
        self.counters.last_retracted = len(retracted)
        return retracted

    def _track_new_token_ratio(self, retracted: list[SimRequest]) -> None:
        """NewTokenRatioTracker: re-estimated from the requests kept after a retraction, else decayed."""
        cfg = self.config
        if retracted:
            decoded = sum(self._processed_outputs(r) for r in self.running)
            max_new = sum(r.max_new_tokens for r in self.running)
            self.new_token_ratio = min(1.0, (decoded + cfg.retract_decode_steps * len(self.running)) / (max_new + 1))
        else:
            decay = (cfg.init_new_token_ratio - cfg.min_new_token_ratio) / cfg.new_token_ratio_decay_steps
            self.new_token_ratio = max(self.new_token_ratio - decay, cfg.min_new_token_ratio)

    def _in_flight_outputs(self, req: SimRequest) -> int:
        """Output tokens of the forward before this one, which the overlap loop processes only after this round is
        scheduled: its output_ids lack them while this round decides (0 on the plain loop)."""
        if self.config.overlap_schedule and req.last_emit_forward == self.forward_ct - 1:
            return req.last_emit_tokens
        return 0

    def _processed_outputs(self, req: SimRequest) -> int:
        """len(req.output_ids) as this round's scheduling sees it."""
        return req.generated - self._in_flight_outputs(req)

    def _drop_in_flight_outputs(self, req: SimRequest) -> None:
        """A request retracted while its last forward is in flight loses that forward's tokens: the result processor
        skips a retracted request (batch_result_processor: `req.finished() or req.is_retracted: continue`, 0.5.17),
        so they are never appended, never streamed, and its re-prefill is one token shorter (traced: the real storm
        re-admits such a request with one output fewer than it decoded)."""
        dropped = self._in_flight_outputs(req)
        if not dropped:
            return
        req.generated -= dropped
        req.last_emit_tokens = 0
        if req.token_times:
            req.token_times.pop()
            req.token_counts.pop()
        if not req.token_times:
            req.first_token_s = None

    def _retract(self, req: SimRequest) -> None:
        self._drop_in_flight_outputs(req)
        self.counters.retracted_input_tokens += req.prompt_len
        self.counters.retracted_output_tokens += req.generated
        # What the tree keeps of it (its inserted fill, unlocked) is a prefix hit at re-admission
        # unless eviction takes some of it first.
        req.cached_len, req.cached_full, req.cached_swa = req.protected, req.full_locked, req.swa_locked
        req.cached_nodes = list(req.tree_nodes)
        req.tree_bounds = req.tree_bounds | frozenset(itertools.accumulate(req.tree_nodes))
        self._release(req, retract=True)
        req.retractions += 1
        req.fill_len = req.prompt_len + req.generated  # the fill: prompt + the output kept
        req.reset_kv()
        self.waiting.append(req)  # _add_request_to_queue(is_retracted=True): back of the queue

    def _run_decode(self, now: float) -> StepReport:
        per_step = self.timing.tokens_per_decode_step()
        whole = math.ceil(per_step)  # the most any request can get this step
        retracted = self._retract_if_needed(whole)
        self._track_new_token_ratio(retracted)
        # What a retracting step costs the server beyond the forwards simulated here, once per step: real 0.5.17
        # storms cost about the same per retracting step from 0.9 down to 0.4, not per retracted request
        # (GPUProfile.retract_step_overhead_ms, docs/real-gpu/first-pass.md).
        retraction_s = self.timing.retract_step_overhead_s if retracted else 0.0
        if not self.running:  # everything was retracted: nothing to decode, the next step prefills
            self._process_last_results()
            return StepReport("retract", now, retraction_s, 0, retracted=tuple(retracted))
        if not self._decode_fits(self.running, whole):
            # retract_decode: the last request cannot decode even alone; SGLang aborts it.
            aborted = tuple(self.running)
            for req in aborted:
                req.error = "KV cache pool is full: aborted under decode memory pressure"
                self._finish(req, now, aborted=True)
            self.running = []
            self._process_last_results()
            return StepReport("retract", now, 0.0, 0, finished=aborted, retracted=tuple(retracted))
        window = self.window
        batch = DecodeBatch(
            batch_size=len(self.running),
            full_kv_tokens=sum(r.kv_len for r in self.running),
            swa_kv_tokens=sum(min(r.kv_len, window) if window else r.kv_len for r in self.running),
        )
        duration = self.timing.decode_step_s(batch) + retraction_s
        end = now + duration
        finished: list[SimRequest] = []
        emitted = 0
        for req in self.running:
            if req.finished:  # finished one forward ago (overlap): its slot is allocated, its token discarded
                self._grow(req, whole)
                continue
            req.spec_credit += per_step
            tokens = min(int(req.spec_credit), req.remaining_new_tokens)
            req.spec_credit -= int(req.spec_credit)
            if tokens <= 0:
                continue
            self._evict_decoded(req)  # alloc_for_decode: maybe_evict_swa, then the step's slots
            self._grow(req, tokens)
            req.decode_steps += 1
            req.generated += tokens
            req.last_emit_forward, req.last_emit_tokens = self.forward_ct, tokens
            emitted += tokens
            self._emit(req, end)
            if req.finished:
                finished.append(req)
        emitted_reqs = tuple(r for r in self.running if r.last_emit_forward == self.forward_ct)
        # Scheduled (retraction checked, slots allocated): now the overlap loop processes the last batch's results.
        self._process_last_results()
        for req in finished:
            self._finish(req, end)
        self.counters.decode_steps += 1
        self.forward_ct += 1
        line = self._decode_log(end, emitted)
        return StepReport(
            "decode", now, duration, batch.batch_size, emitted, tuple(finished), tuple(retracted), emitted_reqs, line
        )

    def _decode_log(self, end: float, emitted: int) -> str | None:
        """Every decode_log_interval steps SGLang logs a line and refreshes its gauges."""
        if self._log_start_s is None:
            self._log_start_s = end
        self._log_tokens += emitted
        if self.counters.decode_steps % self.config.decode_log_interval:
            return None
        elapsed = end - self._log_start_s
        self.gen_throughput = self._log_tokens / elapsed if elapsed > 0 else 0.0
        self._log_tokens, self._log_start_s = 0, end
        full_used = self.full.used
        line = f"Decode batch, #running-req: {len(self.running)}, #full token: {full_used}, full token usage: {self.full.usage:.2f}, "
        if self.swa is not None:
            line += f"#swa token: {self.swa.used}, swa token usage: {self.swa.usage:.2f}, "
        line += f"cuda graph: True, gen throughput (token/s): {self.gen_throughput:.2f}, #queue-req: {len(self.waiting)}"
        self.last_decode_log = line
        return line

    def _check_static_caps(self, req: SimRequest, extend: int) -> None:
        """0.5.17's unified memory, as measured (docs/real-gpu/unified.md): the server died in a
        prefill (extend) forward once a side held more slots than its static pool: the SWA side
        after decodes took it past its cap (chat at 64 in flight), the full side on the prefill that
        took it past its cap (8k prompts). Emulated as: a prefill (extend) whose slots would leave
        either side's occupied slots (used + cached) above its static cap raises the server's
        device-side assert."""
        if self.arena is None or not self.config.crash_beyond_static_caps:
            return
        page = self.config.page_size
        pages = ceil_page(req.kv_len + extend, page) - ceil_page(req.kv_len, page)
        for side in (self.full, self.swa):
            if side.occupied + pages > side.capacity:
                raise DeviceAssert(side.name, side.occupied + pages, side.capacity)

    # -- KV bookkeeping ----------------------------------------------------------------------
    def _grow(self, req: SimRequest, tokens: int) -> None:
        """Allocate the request's next `tokens` positions in both pools (request-held)."""
        page = self.config.page_size
        pages = ceil_page(req.kv_len + tokens, page) - ceil_page(req.kv_len, page)
        if pages:
            self.full.alloc(pages)
            if self.swa is not None:
                self.swa.alloc(pages)
                req.swa_held += pages
            self._sync_trees()
        req.kv_len += tokens
        req.full_held += pages

    def _checkpoint(self, req: SimRequest, end: int | None = None) -> None:
        """Insert the request's prefix [0, end) (default: kv_len) into the radix tree and re-lock its tail (§1.1-1.2).

        Full pool: the new segment moves from held to locked. SWA pool: the new segment's nodes are
        capped at one window; the lock covers the tail nodes up to the window, `L`; the rest becomes
        evictable tree cache, except that 0.5.23 first frees the segment's out-of-window part.
        """
        page = self.config.page_size
        end, start = req.kv_len if end is None else end, req.protected
        if end <= start:
            return
        segment = ceil_page(end, page) - ceil_page(start, page)  # slots allocated for it
        req.full_held -= segment
        req.full_locked += segment
        req.protected = end
        self.full_tree.reuse(req, start, end)  # over its old path the tree keeps the old full KV
        if self.swa is None:
            req.tree_access = self.forward_ct
            return
        window = self.window or 0
        # The insert splits at the full tree's existing node boundaries (a retracted prefix it still holds), and only
        # the fresh leaf beyond that path is capped at a window (_maybe_split_leaf_for_swa_lock): a piece of the old
        # path keeps its node's size (traced: a whole 1,128-token re-prefill left 70 tokens evictable, not 105).
        path = self.full_tree.held_prefix(req)
        cuts = sorted({b for b in req.tree_bounds if start < b < end} | ({path} if start < path < end else set()))
        for a, b in zip([start, *cuts], [*cuts, end]):
            req.tree_nodes += [b - a] if b <= path else insert_nodes([b - a], window, page)
        locked = min(locked_tail(req.tree_nodes, window), end)
        before = req.swa_locked + segment  # the old lock and the segment, both counted used
        freed = 0
        if self.config.rules.free_out_of_window_prompt:
            lo = max(req.swa_cursor, start)
            hi = floor_page(min(end - 1 - window, end - locked), page)
            freed = max(hi - lo, 0)
            req.swa_cursor = max(lo, hi)
        freed = min(freed, max(before - locked, 0))
        cached = max(before - locked - freed, 0)
        if freed:
            self.swa.free(freed)
        if cached:
            self.swa.cache(cached)
            self.swa_tree.add(cached, self.forward_ct)
        req.tree_access = self.forward_ct
        req.swa_held -= segment
        req.swa_locked = locked

    def _process_last_results(self) -> None:
        """The overlap loop's deferred processing of the last forward: its completed prefills' inserts (for the
        requests still running: a retracted one released what it held without it), then its finished requests'
        release to the radix cache."""
        pending, self._pending_checkpoints = self._pending_checkpoints, []
        for req, end in pending:
            if req in self.running:
                self._checkpoint(req, end)
        released, self._pending_releases = self._pending_releases, []
        if released:
            for req in released:
                self._release(req, retract=False)
            gone = set(map(id, released))
            self.running = [r for r in self.running if id(r) not in gone]

    def _evict_decoded(self, req: SimRequest) -> None:
        """maybe_evict_swa for one request: free decoded SWA slots more than a window behind (§1.3)."""
        if self.swa is None or req.protected <= 0:
            return
        new = decode_free_to(
            self.config.rules, seq_len=req.kv_len + 1, prompt_end=req.protected, cursor=req.swa_cursor,
            window=self.window or 0, page_size=self.config.page_size, forward_iter=self.forward_ct,
            decode_batch_idx=req.decode_steps,
        )
        if new is None:
            return
        lo = max(req.swa_cursor, req.protected)
        freed = min(max(new - lo, 0), req.swa_held)
        if freed:
            self.swa.free(freed)
            req.swa_held -= freed
        req.swa_cursor = max(req.swa_cursor, new)

    def _release(self, req: SimRequest, *, retract: bool) -> None:
        """Finish: everything the request had live goes to the tree cache (evictable), inserted now.
        Retraction: held slots are freed, the locked prefix stays in the tree, unlocked (evictable),
        as old as its last insert and marked as the request's prefix hit."""
        if retract:
            self.full.free(req.full_held)
            self.full.cache(req.full_locked)
            entries = [self.full_tree.add(req.full_locked, req.tree_access, req), None]
            if self.swa is not None and self.swa_tree is not None:
                self.swa.free(req.swa_held)
                self.swa.cache(req.swa_locked)
                entries[1] = self.swa_tree.add(req.swa_locked, req.tree_access, req)
            self._cached_entries[id(req)] = entries
        else:
            self.full.cache(req.full_held + req.full_locked)
            self.full_tree.add(req.full_held + req.full_locked, self.forward_ct)
            if self.swa is not None and self.swa_tree is not None:
                self.swa.cache(req.swa_held + req.swa_locked)
                self.swa_tree.add(req.swa_held + req.swa_locked, self.forward_ct)
        req.full_held = req.full_locked = req.swa_held = req.swa_locked = 0

    def flush_cache(self) -> None:
        """/flush_cache (nothing running or waiting): the tree's evictable part is freed."""
        for tree in (self.full_tree, self.swa_tree):
            if tree is not None:
                tree.pool.evictable = 0
                tree.heap.clear()
                tree.seen = tree.pool.evicted_total
        self._cached_entries.clear()

    def _sync_trees(self) -> None:
        """An allocation that evicted tree cache: take it from the oldest segments."""
        self.full_tree.sync()
        if self.swa_tree is not None:
            self.swa_tree.sync()

    def _finish(self, req: SimRequest, end: float, *, aborted: bool = False) -> None:
        """The request's last token is out (the client has it at `end`). Its KV goes to the radix cache (finished
        requests stay cached): at once on the plain loop, on the overlap loop after the next forward is scheduled."""
        req.finish_s = end
        self.counters.requests += 1
        self.counters.prompt_tokens += req.prompt_len
        self.counters.generation_tokens += req.generated
        if self.config.overlap_schedule and not aborted:
            self._pending_releases.append(req)
        else:
            self._release(req, retract=False)
            if req in self.running:
                self.running.remove(req)
        if self.on_finish is not None:
            self.on_finish(req)

    @staticmethod
    def _emit(req: SimRequest, when: float) -> None:
        if req.first_token_s is None:
            req.first_token_s = when
        req.token_times.append(when)
        req.token_counts.append(req.generated)

    def _usage_text(self) -> str:
        text = f"full token usage: {self.full.usage:.2f}"
        if self.swa is not None:
            text += f", swa token usage: {self.swa.usage:.2f}"
        return text
