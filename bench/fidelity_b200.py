"""Simulator fidelity against the user's measured B200 figures (docs/reference/seed.md).

gemma-4-31B-it, B200, ratio 0.8, page 64 (trtllm_mha), MTP accept length 3.13, 40 random prompts at
max concurrency 32, seed 1, pool budget pinned to the logged layout (98.0513 GB). Prints a table:
figure, measured, simulated, error. Run: python bench/fidelity_b200.py
"""

from __future__ import annotations

from autotune.hardware import load_gpu
from autotune.models import load_model
from autotune.pools import pinned_budget
from autotune.sim.config import SimServerConfig
from autotune.sim.run import simulate
from autotune.workloads import MaxConcurrency, random_ids_workload

MEASURED = {  # docs/reference/seed.md, SGLang at ratio 0.8
    "chat": {"median TTFT (ms)": 673, "median TPOT (ms)": 8.69, "P99 TPOT (ms)": 11.10, "total throughput (tok/s)": 4715},
    "summarization": {"median TTFT (ms)": 13613, "median TPOT (ms)": 17.02, "P99 TPOT (ms)": 27.13, "total throughput (tok/s)": 7475},
}
SHAPES = {"chat": (1024, 1024), "summarization": (8192, 1024)}


def main() -> None:
    config = SimServerConfig(
        model=load_model("31B"), gpu=load_gpu("B200"), swa_full_tokens_ratio=0.8, page_size=64,
        kv_budget_bytes=pinned_budget(98.0513).bytes, speculative_accept_length=3.13,
        # The seed's benchmark client put its burst in the scheduler's first round (its 673 ms median TTFT is one
        # 16k-token prefill); our replay client sends one request every 0.3 ms, which the default models.
        client_send_interval_s=0.0,
    )
    print(f"{'workload':14} {'figure':26} {'measured':>10} {'simulated':>10} {'error':>8}")
    for name, (prompt, output) in SHAPES.items():
        work = random_ids_workload(name, 40, prompt, output, range_ratio=1.0, seed=1, arrival=MaxConcurrency(32))
        s = simulate(work, config).summary
        got = {
            "median TTFT (ms)": s.ttft.median, "median TPOT (ms)": s.tpot.median,
            "P99 TPOT (ms)": s.tpot.p99, "total throughput (tok/s)": s.total_throughput,
        }
        for figure, measured in MEASURED[name].items():
            error = (got[figure] - measured) / measured
            print(f"{name:14} {figure:26} {measured:>10.2f} {got[figure]:>10.2f} {error:>+8.1%}")


if __name__ == "__main__":
    main()
