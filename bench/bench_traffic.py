"""Production traffic in the simulator: a trace slice alone and mixed, across ratios, in virtual time.

For each ratio, the simulated SGLang (`autotune.sim.run.simulate`, the `sim-fast` backend's engine)
serves three workloads on one model and GPU: a slice of a timestamped trace (Azure or BurstGPT CSV,
Mooncake JSONL; `--trace`, required: nothing is downloaded), the `chat` preset, and a mix of the two
merged by time (the trace slice plus a Poisson stream of long prompts). It prints, per workload and
ratio, requests/s served, output tok/s, TTFT p99 and TPOT p99. Results are SIMULATED.

    python bench/bench_traffic.py --trace AzureLLMInferenceTrace_conv.csv [--start 600 --duration 300
                                  --sample 0.5 --speedup 1] [--model 26B-A4B --gpu H100] [--ratio 0.2 ...]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import yaml

from autotune.hardware import load_gpu
from autotune.sim.args import load_model_for, parse_args, server_config
from autotune.sim.run import simulate
from autotune.workloads import get_preset, parse_workload_arg

from trace_slice_args import slice_entry, trace_slice_parser  # beside this file


def main() -> None:
    parser = trace_slice_parser(__doc__.splitlines()[0])
    parser.add_argument("--speedup", type=float, default=1.0)
    args = parser.parse_args()
    ratios = args.ratio or [0.2, 0.4, 0.6, 0.8, 1.0]
    with tempfile.TemporaryDirectory() as tmp:
        trace = {**slice_entry(args), "speedup": args.speedup}
        mix = {"name": "trace+long-docs", "mix": [
            {k: v for k, v in trace.items() if k != "speedup"},
            {"name": "long-docs", "num_prompts": 20, "input_len": 16000, "output_len": 256, "range_ratio": 0.5,
             "request_rate": 0.1},
        ], "speedup": args.speedup}
        path = Path(tmp) / "traffic.yaml"
        path.write_text(yaml.safe_dump([trace, mix]))
        workloads = [*parse_workload_arg(str(path)), get_preset("chat")]
    print(f"{args.model} on {args.gpu}, SIMULATED (virtual time)")
    for w in workloads:
        print(f"  {w.describe()}")
    print(f"\n{'workload':<50} {'ratio':>5} {'req/s':>7} {'out tok/s':>9} {'TTFT p99':>9} {'TPOT p99':>9} {'failed':>6} {'wall':>6}")
    for w in workloads:
        for ratio in ratios:
            sim_args = parse_args(["--model-path", args.model, "--gpu", args.gpu, "--swa-full-tokens-ratio", str(ratio)])
            config = server_config(sim_args, load_model_for(sim_args), load_gpu(sim_args.gpu))
            t0 = time.perf_counter()
            result = simulate(w, config)
            s = result.summary
            print(f"{w.name[:50]:<50} {ratio:>5.2f} {s.request_throughput:>7.2f} {s.output_throughput:>9.0f} "
                  f"{s.ttft.p99:>7.0f}ms {s.tpot.p99:>7.1f}ms {s.failed:>6} {time.perf_counter() - t0:>5.1f}s")


if __name__ == "__main__":
    main()
