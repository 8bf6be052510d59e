"""The simulator's own flags: what `python -m autotune.sim.server` accepts beyond SGLang's.

They are declared here, apart from the rest of the parser (autotune/sim/args.py), so that the
one module of SGLang facts (autotune/sglang_facts.py) can take their names from the simulator's
own parser without importing the simulator: real SGLang must never be given one of them.
"""

from __future__ import annotations

import argparse

from autotune.pools.footprint import DEFAULT_SGLANG_VERSION

DEFAULT_GPU = "H100-80GB"
EMULATED_SGLANG_VERSION = DEFAULT_SGLANG_VERSION  # the release whose scheduler rules the simulator follows by default


def add_simulator_flags(group: argparse._ActionsContainer) -> None:
    """Add the simulator-only flags to a parser or argument group."""
    add = group.add_argument
    add("--gpu", default=DEFAULT_GPU, help="GPU profile name, alias or YAML file.")
    add("--kv-budget-gb", type=float, default=None, help="Pin the KV budget (decimal GB, 10^9 bytes).")
    add("--speculative-accept-length", type=float, default=None, help="Simulated MTP: tokens per step.")
    add("--time-scale", type=float, default=1.0, help="Run the simulated clock this many times faster.")
    add(
        "--sglang-version", default=EMULATED_SGLANG_VERSION,
        help=f"The SGLang release whose scheduler rules to follow (default {EMULATED_SGLANG_VERSION}; 0.5.17 differs).",
    )
    add("--boot-delay", type=float, default=0.0, help="Wall seconds of simulated weight loading before the port binds.")


def simulator_flag_names() -> frozenset[str]:
    """The simulator-only flags' long names without dashes (`kv-budget-gb`), read off the parser."""
    parser = argparse.ArgumentParser(add_help=False)
    add_simulator_flags(parser)
    return frozenset(action.option_strings[0][2:] for action in parser._actions)  # noqa: SLF001 - no public list
