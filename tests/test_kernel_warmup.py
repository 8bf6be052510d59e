"""The prefill warm-up a trial sends before it measures (workers/kernel_warmup.py), against the
simulated server over real HTTP: one prompt at a time, each its own prefill batch of exactly that
many tokens, the radix cache flushed after, and none of it in the measured counters."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from workers.kernel_warmup import MOE_TUNED_TOKEN_COUNTS, prefill_token_counts
from workers.spec import ServerSpec
from workers.trial import run_trial

from test_workers import sim_spec, trial

pytestmark = pytest.mark.usefixtures("no_leftover_servers")


def test_the_counts_cover_every_tuned_size_odd_and_even_up_to_the_longest_chunk() -> None:
    counts = prefill_token_counts()
    assert counts == tuple(sorted(set(counts))) and counts[-1] == 8192
    for k in MOE_TUNED_TOKEN_COUNTS:
        assert k in counts and k + 1 in counts  # M even and M odd compile apart
    assert prefill_token_counts(100)[-1] == 100 and max(prefill_token_counts(100)) <= 100


def test_a_real_server_is_warmed_by_default_the_simulated_one_is_not(tmp_path: Path) -> None:
    real = ServerSpec(backend="sglang", model_path="/models/x", flags={"swa-full-tokens-ratio": 0.8})
    assert trial(tmp_path, real).warmup_counts() == prefill_token_counts()
    assert trial(tmp_path, sim_spec()).warmup_counts() == ()
    assert trial(tmp_path, real, prefill_warmup=()).warmup_counts() == ()


def test_the_warm_up_runs_before_the_measured_replay_and_is_not_counted(tmp_path: Path) -> None:
    counts = (1, 17, 1024, 1025)
    spec = trial(tmp_path, sim_spec(0.8), prefill_warmup=counts)
    result = run_trial(spec)
    assert result.ok, result.message
    assert result.warmup_s is not None and result.warmup_s >= 0
    log = Path(result.log_path).read_text()
    batches = [int(n) for n in re.findall(r"Prefill batch, #new-seq: 1, #new-token: (\d+), #cached-token: 0", log)]
    first = batches.index(1)  # what comes before is the boot's own readiness probe (a few tokens)
    assert all(n < 8 for n in batches[:first])
    assert batches[first: first + len(counts)] == list(counts)  # one request per batch, in order, first
    # Flushed after: the 2,067 warm-up tokens are not left in the radix tree (the baseline scrape holds
    # at most the replay's own capped warm-up request).
    assert result.samples[0].kv_evictable_tokens < 300 and result.samples[0].swa_evictable_tokens < 300
    # The scraper's baseline is taken after the warm-up: the counters grew by the measured run alone.
    assert result.server_counters["sglang:prompt_tokens_total"] == result.client_counts["prompt_tokens"]
    assert result.server_counters["sglang:num_requests_total"] == result.client_counts["requests"]


def test_the_study_warms_real_trials_unless_told_not_to() -> None:
    import optuna

    from autotune.study.controller import _trial_spec
    from test_boot_speedups import plan_for

    def spec(**kwargs):
        plan = plan_for("sglang", **kwargs)
        trial = optuna.create_study(directions=plan.objective.directions).ask(plan.space.distributions(plan.feasible_low()))
        return _trial_spec(plan, trial, {"swa_full_tokens_ratio": 0.5})

    assert spec().warmup_counts() == prefill_token_counts() and spec().freeze_gc
    assert spec(warm_up=False).warmup_counts() == ()


def test_the_simulated_server_answers_freeze_gc_as_sglang_does(tmp_path: Path) -> None:
    spec = trial(tmp_path, sim_spec(0.8), prefill_warmup=(1, 2))
    result = run_trial(spec)
    assert result.ok and result.warmup_s is not None
    assert "Freezing GC" in Path(result.log_path).read_text()
    without = run_trial(trial(tmp_path / "b", sim_spec(0.8), prefill_warmup=(1, 2), freeze_gc=False))
    assert "Freezing GC" not in Path(without.log_path).read_text()


def test_a_server_that_dies_during_the_warm_up_fails_the_trial_and_says_when(tmp_path: Path) -> None:
    servers = []

    def progress(phase: str, _done: int, _total: int) -> None:
        if phase == "warm-up":
            servers[0].stop()  # the server dies before the warm-up's first request

    result = run_trial(trial(tmp_path, sim_spec(0.8), prefill_warmup=(1, 2, 3)), progress=progress,
                       on_process=servers.append)
    assert not result.ok and result.failure is not None
    assert "prefill warm-up" in result.message and result.summary is None
