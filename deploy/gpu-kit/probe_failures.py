"""Boot real SGLang where it must fail, through the project's own worker code, and keep the logs.

Run on a GPU node (validate.sh does): a ratio too small for one window (SGLang refuses to start)
and a flag SGLang rejects. Prints each TrialResult's failure class and message as JSON lines; the
logs it leaves in --log-dir become the fixtures of tests/test_real_sglang_logs.py.
"""

from __future__ import annotations

import argparse
import json
import sys

from autotune.models import load_model
from autotune.models.dummy import DUMMY_LOAD_FLAGS, write_dummy_model
from autotune.workloads import get_preset
from workers.spec import ServerSpec
from workers.trial import TrialSpec, run_trial


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="26B-A4B")
    parser.add_argument("--log-dir", default="autotune-logs/probes")
    parser.add_argument("--backend", default="sglang", choices=("sglang", "sim"))
    parser.add_argument("--mem-fraction-static", type=float, default=None)
    args, extra = parser.parse_known_args()
    dummy = write_dummy_model(load_model(args.model), f"{args.log_dir}/models")
    flags = dict(DUMMY_LOAD_FLAGS)
    if args.mem_fraction_static is not None:
        flags["mem-fraction-static"] = args.mem_fraction_static
    probes = {
        "tiny-ratio": ({**flags, "swa-full-tokens-ratio": 0.001}, ()),
        "rejected-flag": ({**flags, "swa-full-tokens-ratio": 0.5}, ("--no-such-flag", "1")),
    }
    workload = get_preset("chat", num_prompts=1, concurrency=1)
    worst = 0
    for name, (probe_flags, probe_extra) in probes.items():
        spec = TrialSpec(
            trial_id=f"probe-{name}",
            server=ServerSpec(backend=args.backend, model_path=str(dummy.path), flags=probe_flags,
                              extra_args=(*extra, *probe_extra)),
            workload=workload, log_dir=args.log_dir, boot_timeout_s=600,
        )
        result = run_trial(spec)
        print(json.dumps({"probe": name, "ok": result.ok, "failure": result.failure.value if result.failure else None,
                          "message": result.message, "boot_s": result.boot_s, "log": result.log_path}), flush=True)
        worst = max(worst, 0 if result.failure else 1)  # a probe that boots is a surprise worth a non-zero exit
    return worst


if __name__ == "__main__":
    sys.exit(main())
