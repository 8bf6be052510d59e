"""Start SGLang with the tuned setting for a model: exact optimum, else a rule, else SGLang's default.

The setting reaches SGLang as a `--config` file, so a ratio the user passes on the command line
still wins (SGLang's precedence: command line > config file > defaults).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from autotune.export import atomic_write, config_flags, config_text, file_name
from autotune.rules import Resolution
from autotune.sglang_facts import LAUNCH_MODULE, RATIO


@dataclass(frozen=True)
class LaunchPlan:
    argv: list[str]
    resolution: Resolution
    config_path: Path | None


def plan_launch(
    resolution: Resolution, model_path: str, workload: str, sglang_args: list[str], config_dir: Path, model_name: str
) -> LaunchPlan:
    argv = [sys.executable, "-m", LAUNCH_MODULE]
    config_path = None
    if resolution.source != "SGLang default":
        config_path = config_dir / file_name(model_name, workload)
        provenance = {"source": resolution.source, "why": resolution.detail, "simulated": resolution.simulated}
        atomic_write(config_path, config_text(config_flags({RATIO: resolution.ratio}), provenance))
        argv += ["--config", str(config_path)]
    if "--model-path" not in sglang_args:
        argv += ["--model-path", model_path]
    return LaunchPlan(argv + list(sglang_args), resolution, config_path)


def exec_sglang(plan: LaunchPlan) -> None:
    """Replace this process with SGLang, so signals and the exit code are SGLang's own."""
    os.execvp(plan.argv[0], plan.argv)
