"""What --boot-ahead saved on real SGLang, from the study databases of docs/real-gpu/boot-ahead/ (no GPU needed).

Each run is one study of four or three queued ratios on one H200, with --boot-ahead or one trial after the other;
the pairs replayed the same workload at the same ratios. Prints, per trial: its boot, how much of it ran before
the last trial freed the GPU and how much the study saw, the replay, the value, and the trial's cadence (its end
minus the last trial's end); then per run the mean cadence and exposed boot after the first trial (which booted
alone, on a fresh machine); then each pair's values side by side.

    python bench/boot_ahead.py [RECORD_DIR]     # default: docs/real-gpu/boot-ahead/
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import optuna

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from autotune.study.trial_attrs import ATTR_RESULT  # noqa: E402
from workers.trial import TrialResult  # noqa: E402

RUNS = ("ahead/ahead.db", "seq/seq.db", "seq/overlap.db", "pair/ahead2.db", "pair/seq2.db")
# Each pair ran on one machine (the first pair's two studies in two calls of one lease), a second machine for the second.
PAIRS = (("ahead/ahead.db", "seq/seq.db", "first machine"), ("pair/ahead2.db", "pair/seq2.db", "second machine"))


@dataclass(frozen=True)
class Trial:
    number: int
    ratio: float
    value: float | None
    result: TrialResult

    @property
    def exposed_boot_s(self) -> float:
        """The boot seconds the study waited for: all of a solo boot, the rest after the GPU was free of an early one."""
        early = self.result.early_boot
        return early.ready_after_free_s if early is not None else float(self.result.boot_s or 0.0)


def read_trials(db: Path) -> list[Trial]:
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    return [
        Trial(t.number, float(t.params["swa_full_tokens_ratio"]), t.values[0] if t.values else None,
              TrialResult.from_dict(t.user_attrs[ATTR_RESULT]))
        for t in study.trials if ATTR_RESULT in t.user_attrs
    ]


def cadences(trials: list[Trial]) -> list[float | None]:
    """Each trial's end minus the last one's (None for the first)."""
    ends = [t.result.finished_at for t in trials]
    return [None] + [b - a for a, b in zip(ends, ends[1:])]


def print_run(name: str, trials: list[Trial]) -> None:
    print(f"\n### {name}\n")
    print("| trial | ratio | boot s | started before the GPU was free s | boot the study saw s | replay s | tok/s | cadence s | early boot thrown away |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for trial, cadence in zip(trials, cadences(trials)):
        early = trial.result.early_boot
        print(f"| {trial.number} | {trial.ratio:.2f} | {trial.result.boot_s:.1f} | "
              f"{early.started_before_free_s if early else 0:.1f} | {trial.exposed_boot_s:.1f} | {trial.result.replay_s:.1f} | "
              f"{trial.value:,.0f} | {'-' if cadence is None else f'{cadence:.1f}'} | {early.rebooted if early and early.rebooted else ''} |")
    later = trials[1:]
    steps = [c for c in cadences(trials) if c is not None]
    print(f"\nafter the first trial: cadence {statistics.mean(steps):.1f} s per trial, boot the study saw "
          f"{statistics.mean(t.exposed_boot_s for t in later):.1f} s of {statistics.mean(t.result.boot_s for t in later):.1f} s")


def print_pairs(record: Path) -> None:
    print("\n### The same ratios with and without --boot-ahead (total tok/s)\n")
    print("| pair | ratio | --boot-ahead | one after the other | difference |")
    print("|---|---:|---:|---:|---:|")
    for ahead_db, seq_db, where in PAIRS:
        ahead = {t.ratio: t.value for t in read_trials(record / ahead_db)}
        seq = {t.ratio: t.value for t in read_trials(record / seq_db)}
        for ratio in sorted(set(ahead) & set(seq)):
            print(f"| {where} | {ratio:.2f} | {ahead[ratio]:,.0f} | {seq[ratio]:,.0f} | {100 * (ahead[ratio] / seq[ratio] - 1):+.1f} % |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("record", nargs="?", type=Path, default=REPO / "docs/real-gpu/boot-ahead")
    record = parser.parse_args().record
    for run in RUNS:
        print_run(run, read_trials(record / run))
    print_pairs(record)


if __name__ == "__main__":
    main()
