"""A request inside the simulated scheduler, with the KV it holds in each pool."""

from __future__ import annotations

from dataclasses import dataclass, field

# managers/schedule_policy.py: CLIP_MAX_NEW_TOKENS bounds what admission reserves per request.
CLIP_MAX_NEW_TOKENS = 4096


def ceil_page(tokens: int, page_size: int) -> int:
    return -(-tokens // page_size) * page_size


def floor_page(tokens: int, page_size: int) -> int:
    return (tokens // page_size) * page_size


@dataclass(eq=False)
class SimRequest:
    rid: str
    prompt_len: int
    max_new_tokens: int
    arrival_s: float
    ignore_eos: bool = True

    # progress
    prefilled: int = 0  # tokens of the fill (prompt + output kept over a retraction) computed so far
    kv_len: int = 0  # tokens in the KV cache: prefilled, then +1 per decode step
    generated: int = 0  # output tokens so far (kept across retractions, as SGLang keeps output_ids)
    fill_len: int = 0  # tokens to prefill: the prompt, or prompt + output after a retraction
    spec_credit: float = 0.0  # fractional tokens owed by speculative decoding

    # KV held (tokens, page-aligned)
    full_held: int = 0
    swa_lo: int = 0  # first token index still held in the SWA pool (earlier ones evicted)

    # timings (virtual or wall seconds, same clock as arrival_s)
    scheduled_s: float | None = None  # first time it left the queue (queue time)
    first_token_s: float | None = None
    token_times: list[float] = field(default_factory=list)  # when each batch of new tokens was emitted
    token_counts: list[int] = field(default_factory=list)  # cumulative output tokens at each emission
    finish_s: float | None = None
    retractions: int = 0
    error: str | None = None  # set when the server aborts the request

    def __post_init__(self) -> None:
        if not self.fill_len:
            self.fill_len = self.prompt_len

    @property
    def prefill_done(self) -> bool:
        return self.prefilled >= self.fill_len

    @property
    def remaining_new_tokens(self) -> int:
        return max(self.max_new_tokens - self.generated, 0)

    @property
    def finished(self) -> bool:
        return self.generated >= self.max_new_tokens

    def swa_held(self, page_size: int) -> int:
        return ceil_page(self.kv_len, page_size) - self.swa_lo
