"""Capacity at an SLO in the simulator: per ratio, the load search `--objective capacity` runs on each
trial (workers/load_search.py), on a slice of a timestamped trace, in virtual time (sim-fast).

For each ratio it prints the largest load (trace speed-up) whose P99 TTFT and TPOT meet the SLO, as
requests/s per GPU, its gain over SGLang's default 0.8, the P99s there and the levels measured on
the one boot. The trace is read from `--trace` (required: nothing is downloaded). Results are SIMULATED.

    python bench/bench_capacity.py --trace AzureLLMInferenceTrace_conv.csv [--start 600 --duration 300
                                   --sample 1] [--slo ttft_p99=2000,tpot_p99=100] [--model 26B-A4B --gpu H100]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import yaml

from autotune.measure.serving_metrics import SLO
from autotune.sglang_facts import DEFAULT_RATIO
from autotune.workloads import parse_workload_arg
from workers.load_search import DEFAULT_MAX_LEVELS, LoadSearchSpec
from workers.sim_fast import run_sim_fast
from workers.spec import ServerSpec
from workers.trial import TrialSpec

from trace_slice_args import slice_entry, trace_slice_parser  # beside this file


def main() -> None:
    parser = trace_slice_parser(__doc__.splitlines()[0])
    parser.add_argument("--slo", default="ttft_p99=2000,tpot_p99=100")
    parser.add_argument("--levels", type=int, default=DEFAULT_MAX_LEVELS)
    args = parser.parse_args()
    ratios = sorted(set(args.ratio or [0.1, 0.2, 0.3, 0.5, 0.8, 1.0]) | {DEFAULT_RATIO})
    slo = SLO.parse(args.slo)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "slice.yaml"
        path.write_text(yaml.safe_dump([slice_entry(args)]))
        workload = parse_workload_arg(str(path))[0]
    print(f"{args.model} on {args.gpu}, SIMULATED (sim-fast, virtual time); SLO {args.slo}; at most {args.levels} levels")
    print(f"  {workload.describe()}\n")
    rows = {}
    for ratio in ratios:
        spec = TrialSpec(
            trial_id=f"r{ratio}", workload=workload, slo=slo, time_budget_s=600.0,
            server=ServerSpec(backend="sim", model_path=args.model, flags={"swa-full-tokens-ratio": ratio},
                              sim_flags={"gpu": args.gpu}),
            load_search=LoadSearchSpec(slo=slo, max_levels=args.levels),
        )
        t0 = time.perf_counter()
        result = run_sim_fast(spec)
        rows[ratio] = (result, time.perf_counter() - t0)
    base = rows[DEFAULT_RATIO][0].load_search.capacity_rps_per_gpu if rows[DEFAULT_RATIO][0].load_search else 0.0
    print(f"| ratio | req/s/GPU at SLO | vs {DEFAULT_RATIO:g} | load | TTFT p99 | TPOT p99 | levels (one boot) | wall |")
    print("|---:|---:|---:|---:|---:|---:|---|---:|")
    for ratio, (result, wall) in rows.items():
        search = result.load_search
        if search is None:
            print(f"| {ratio:.2f} | failed: {result.message} | | | | | | |")
            continue
        best = search.best
        gain = f"{search.capacity_rps_per_gpu / base - 1:+.0%}" if base else "-"
        levels = ", ".join(f"{lv.multiplier:g}x {'ok' if lv.passed else 'miss'}" for lv in search.levels)
        at = (f"{'>=' if search.open_ended else ''}{best.multiplier:g}x | {best.ttft_p99_ms:,.0f} ms | {best.tpot_p99_ms:.1f} ms"
              if best else "none | - | -")
        print(f"| {ratio:.2f} | {search.capacity_rps_per_gpu:.3g} | {gain} | {at} | {levels} | {wall:.1f} s |")


if __name__ == "__main__":
    main()
