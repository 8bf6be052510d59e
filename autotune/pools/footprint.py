"""What one request holds in each KV pool over its life, per SGLang release (radix cache on).

One module that both the simulator's scheduler (autotune/sim/scheduler.py) and the capacity model
(autotune/pools/capacity.py) follow, so the two cannot disagree on a request's SWA footprint. The rules
are the code study in docs/sglang-swa-accounting.md (SGLang 0.5.17 and 0.5.23), in its notation:

    P  prompt tokens prefilled (the fill: prompt + kept output after a retraction)
    j  decode steps run = decoded tokens that hold a KV slot
    W  the window as SGLang runs it (config.sliding_window - 1; Gemma 4: 1023)
    I  SGLANG_SWA_EVICTION_INTERVAL (128)

    swa_used(P, j) = L(P) + H(j)        full_used(P, j) = P + j

- L(P), the prompt tail the request keeps **locked** in the radix tree from the end of its prefill to
  its finish or retraction (§1.2): the shortest suffix of the prompt's tree nodes covering W. Every
  chunk's insert caps its new leaf at one page-aligned window `Wp`, so a one-chunk prompt locks
  `min(P, Wp)` and a chunked prompt whose last chunk `c < W` locks `c + Wp`.
- H(j), the decoded tokens the request holds (§1.3). Decode frees only decoded tokens (the floor is
  the tree-owned prompt), once they are more than W behind: `H(j) = j` until the first free, then a
  saw-tooth in [W+1, W+I]. 0.5.17 frees on the server's global `forward_iter % I == 0` steps (phase
  unrelated to the request), 0.5.23 on a per-request token trigger (first real free at j = W+I+1).
- The prompt's older part `P - L(P)` is tree cache: evictable in 0.5.17, freed at the prefill
  checkpoint in 0.5.23 (SGLANG_OPT_UNIFIED_CACHE_FREE_OUT_OF_WINDOW_SLOTS' default changed). Neither
  counts in `sglang:swa_used_tokens`, so admission (which counts free + evictable) sees no difference.

Admission's SWA reservation (§3) is the same in both releases and smaller than that footprint:
`max(min(extend, chunk) - W, 0) + min(extend + max_new, W) + page`, max_new clipped at 4096 and never
scaled by the new-token ratio. The difference is absorbed by retraction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

# SGLANG_SWA_EVICTION_INTERVAL (environ.py, both releases).
SWA_EVICTION_INTERVAL = 128
# managers/schedule_policy.py: SGLANG_CLIP_MAX_NEW_TOKENS_ESTIMATION bounds what admission reserves.
CLIP_MAX_NEW_TOKENS = 4096
# The release whose rules apply when nothing says which server runs (the newest one studied).
DEFAULT_SGLANG_VERSION = "0.5.23"
STUDIED_RELEASES = ("0.5.17", "0.5.23")


def ceil_page(tokens: int, page_size: int) -> int:
    return -(-tokens // page_size) * page_size


def floor_page(tokens: int, page_size: int) -> int:
    return (tokens // page_size) * page_size


def parse_version(text: str) -> tuple[int, int, int]:
    """`0.5.17`, `v0.5.23`, `sglang-0.5.17+dummy-weights`, `0.5.23.post1` -> (0, 5, 17)."""
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", text or "")
    if not match:
        raise ValueError(f"SGLang version {text!r}: use the release number, e.g. 0.5.17")
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


@dataclass(frozen=True)
class ReleaseRules:
    """The rules that decide a request's footprint and admission in one SGLang release.

    Releases after 0.5.17 follow 0.5.23's rules and releases up to 0.5.17 follow 0.5.17's: only those
    two were read (docs/sglang-swa-accounting.md); where in between each rule changed is not known.
    """

    version: str
    # 0.5.23 frees the out-of-window prompt at each prefill checkpoint (flag default True);
    # 0.5.17 leaves it in the tree as evictable SWA (flag default False). §1.1, §1.2.
    free_out_of_window_prompt: bool
    # Decode eviction cadence: 0.5.23 per request on accumulated tokens (_swa_eviction_trigger),
    # 0.5.17 on the server's global forward_iter % I == 0 steps (maybe_evict_swa). §1.3.
    per_request_eviction_trigger: bool
    # 0.5.17 shrinks a prefill chunk to the SWA room left under any SWA shortfall; 0.5.23 only when
    # the request could never fit ("transient pressure waits", prefill_budget.check_prefill). §3.
    shrink_chunk_on_transient_swa_pressure: bool
    # 0.5.23 reserves all of an ignore_eos running request's remaining output; 0.5.17 scales it by
    # the new-token ratio like any request (_get_running_request_total_token_offset). §3.
    fixed_length_full_reservation: bool
    eviction_interval: int = SWA_EVICTION_INTERVAL

    @property
    def label(self) -> str:
        return f"SGLang {self.version} rules"


def release_rules(version: str | None = None) -> ReleaseRules:
    """The rules of the SGLang release `version` (a release number or a server version string)."""
    text = version or DEFAULT_SGLANG_VERSION
    old = parse_version(text) <= (0, 5, 17)
    return ReleaseRules(
        version=".".join(map(str, parse_version(text))),
        free_out_of_window_prompt=not old,
        per_request_eviction_trigger=not old,
        shrink_chunk_on_transient_swa_pressure=old,
        fixed_length_full_reservation=not old,
    )


# -- the prompt's locked tail: L(P) ----------------------------------------------------------


def insert_nodes(chunks: Sequence[int], window: int, page_size: int = 1) -> list[int]:
    """Sizes of the radix-tree nodes a prompt inserted chunk by chunk occupies, root first.

    Every chunk's insert caps its fresh leaf at one page-aligned window (`_maybe_split_leaf_for_swa_lock`,
    both releases): a chunk longer than `Wp` becomes two nodes, its head and its last `Wp` tokens.
    """
    wp = ceil_page(max(window, page_size), page_size)
    nodes: list[int] = []
    for chunk in chunks:
        if chunk <= 0:
            continue
        if chunk > wp:
            nodes += [chunk - wp, wp]
        else:
            nodes.append(chunk)
    return nodes


def locked_tail(nodes: Sequence[int], window: int) -> int:
    """acquire_component_lock: lock nodes from the leaf towards the root until they cover the window."""
    locked = 0
    for size in reversed(nodes):
        if locked >= window:
            break
        locked += size
    return locked


def prompt_chunks(prompt_len: int, chunked_prefill_size: int | None) -> list[int]:
    """How one request alone is prefilled: whole chunks, then the rest."""
    if not chunked_prefill_size or chunked_prefill_size <= 0 or prompt_len <= chunked_prefill_size:
        return [prompt_len]
    full, rest = divmod(prompt_len, chunked_prefill_size)
    return [chunked_prefill_size] * full + ([rest] if rest else [])


def locked_prompt_tail(
    prompt_len: int, window: int, page_size: int = 1, *, chunked_prefill_size: int | None = None,
    chunks: Sequence[int] | None = None,
) -> int:
    """L(P): the SWA tokens of the prompt a running request keeps locked in the tree (§1.2).

    `chunks` gives the actual chunking (a request that shared a prefill batch can be split anywhere);
    without it the prompt is chunked alone by `chunked_prefill_size`.
    """
    if prompt_len <= 0:
        return 0
    parts = list(chunks) if chunks is not None else prompt_chunks(prompt_len, chunked_prefill_size)
    return locked_tail(insert_nodes(parts, window, page_size), window)


# -- decoded tokens held: H(j) ---------------------------------------------------------------


def decode_free_to(
    rules: ReleaseRules, *, seq_len: int, prompt_end: int, cursor: int, window: int, page_size: int = 1,
    forward_iter: int = 0, decode_batch_idx: int = 1,
) -> int | None:
    """One decode step's `maybe_evict_swa` for one request, before the step allocates its slot.

    `seq_len` counts the request's positions including the one this step decodes (SGLang's
    `req.seqlen`), so `seq_len - 1` positions are committed; `cursor` is the request's SWA evicted
    position (`swa_evicted_seqlen`); `prompt_end` the tree-owned prefix (`cache_protected_len`).
    Returns the new cursor when the step evicts (tokens in [old cursor, new cursor) are freed, those
    below `prompt_end` never), or None when it does not run.
    """
    pre_len = seq_len - 1
    if decode_batch_idx < 1:
        return None
    if rules.per_request_eviction_trigger:
        # 0.5.23 _swa_eviction_trigger, then free_swa_out_of_window_slots(eviction_interval=1).
        if pre_len - window < cursor + rules.eviction_interval:
            return None
        threshold = pre_len - ceil_page(max(window, page_size), page_size)
    else:
        # 0.5.17 maybe_evict_swa: every I-th forward of the server, whatever the request's phase.
        if forward_iter % rules.eviction_interval != 0:
            return None
        threshold = floor_page(pre_len - max(window, page_size), page_size)
    floor = max(cursor, prompt_end)
    return max(floor, threshold)


def decoded_held(
    rules: ReleaseRules, steps: int, window: int, *, prompt_len: int = 0, page_size: int = 1,
    first_forward_iter: int = 0,
) -> int:
    """H(j): decoded SWA tokens a request holds after `steps` decode steps (page 1 is exact).

    For 0.5.17 the result depends on the global forward counter: `first_forward_iter` is the server's
    `forward_iter` seen by the request's first decode step; every later step adds one (a server that
    decodes only this batch). For 0.5.23 it does not matter.
    """
    cursor = max(prompt_len - 1 - window, 0) if rules.free_out_of_window_prompt else 0
    freed = prompt_len  # decoded positions below this are freed
    for j in range(1, steps + 1):
        new = decode_free_to(
            rules, seq_len=prompt_len + j, prompt_end=prompt_len, cursor=cursor, window=window,
            page_size=page_size, forward_iter=first_forward_iter + j - 1, decode_batch_idx=j - 1,
        )
        if new is not None:
            cursor = new
            freed = max(freed, new)
    return prompt_len + steps - max(freed, prompt_len)


def max_decoded_held(rules: ReleaseRules, output_len: int, window: int, page_size: int = 1) -> int:
    """The most decoded tokens a request ever holds: `j` up to W + I (the worst phase for 0.5.17)."""
    steps = max(output_len - 1, 0)  # the prefill's logits give the first token: N outputs, N-1 steps
    return min(steps, ceil_page(window, page_size) + rules.eviction_interval)


# -- one request, whole ------------------------------------------------------------------------


@dataclass(frozen=True)
class Footprint:
    """KV tokens one running request accounts for, by how SGLang's gauges count them (§2)."""

    swa_locked: int  # prompt tail locked in the tree: counts in swa_used_tokens
    swa_held: int  # decoded tokens the request holds: counts in swa_used_tokens
    swa_evictable: int  # the prompt's unlocked tree cache: swa_evictable_tokens, not used
    full_locked: int  # the prompt, locked in the tree
    full_held: int  # decoded tokens

    @property
    def swa_used(self) -> int:
        return self.swa_locked + self.swa_held

    @property
    def full_used(self) -> int:
        return self.full_locked + self.full_held


def running_footprint(
    rules: ReleaseRules, prompt_len: int, steps: int, window: int, *, page_size: int = 1,
    chunked_prefill_size: int | None = None, chunks: Sequence[int] | None = None, first_forward_iter: int = 0,
) -> Footprint:
    """A request `steps` decode steps after its prefill, nobody else pressing on the pools."""
    locked = locked_prompt_tail(prompt_len, window, page_size, chunked_prefill_size=chunked_prefill_size, chunks=chunks)
    if rules.free_out_of_window_prompt:
        evictable = max(min(prompt_len, window + 1) - locked, 0)  # the 1-token cap remainder
    else:
        evictable = prompt_len - locked
    held = decoded_held(rules, steps, window, prompt_len=prompt_len, page_size=page_size,
                        first_forward_iter=first_forward_iter)
    return Footprint(swa_locked=locked, swa_held=held, swa_evictable=evictable,
                     full_locked=ceil_page(prompt_len, page_size), full_held=steps)


def peak_swa_tokens(
    rules: ReleaseRules, prompt_len: int, output_len: int, window: int, *, page_size: int = 1,
    chunked_prefill_size: int | None = None,
) -> int:
    """The most SWA tokens a request counts as used while it decodes: L(P) + max H, plus the page
    the next decode step allocates (what `check_decode_mem` needs free)."""
    locked = locked_prompt_tail(prompt_len, window, page_size, chunked_prefill_size=chunked_prefill_size)
    return ceil_page(locked + max_decoded_held(rules, output_len, window, page_size), page_size) + page_size


def admission_swa_reservation(extend: int, max_new: int, window: int, page_size: int, chunk_limit: int | None) -> int:
    """prefill_budget.estimate_swa_kv_tokens / _swa_budget_for_req (identical in both releases)."""
    allocated = extend if chunk_limit is None else min(extend, chunk_limit)
    return max(allocated - window, 0) + min(extend + max_new, window) + page_size
