"""Virtual-time speed of the simulated engine (the `sim-fast` backend).

Requests simulated per wall-clock second for a 1000-request chat workload and a 1000-request
summarisation workload (gemma-4-26B-A4B on H100, SGLang's default memory settings), at a ratio
where the pools bind and at the default 0.8. Run: python bench/bench_sim_engine.py
"""

from __future__ import annotations

import time

from autotune.hardware import load_gpu
from autotune.models import load_model
from autotune.sim.config import SimServerConfig
from autotune.sim.run import simulate
from autotune.workloads import get_preset


def main() -> None:
    model, gpu = load_model("26B-A4B"), load_gpu("H100")
    print(f"{'workload':14} {'ratio':>6} {'requests':>9} {'tokens':>10} {'virtual s':>10} {'wall s':>8} {'req/s':>8} {'vs real time':>12}")
    for name in ("chat", "summarization"):
        work = get_preset(name, num_prompts=1000)
        for ratio in (0.3, 0.8):
            config = SimServerConfig(model=model, gpu=gpu, swa_full_tokens_ratio=ratio)
            started = time.perf_counter()
            result = simulate(work, config)
            wall = time.perf_counter() - started
            tokens = result.summary.total_input + result.summary.total_output
            print(
                f"{name:14} {ratio:>6} {result.summary.completed:>9} {tokens:>10} {result.duration_s:>10.1f} "
                f"{wall:>8.2f} {result.summary.completed / wall:>8.0f} {result.duration_s / wall:>11.0f}x"
            )


if __name__ == "__main__":
    main()
