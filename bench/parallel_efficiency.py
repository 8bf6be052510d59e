"""Trials per hour at N trials at once against one at a time, from real study databases (no GPU needed).

Reads the databases `deploy/gpu-kit/session.sh` wrote (one study run per database; the same workload at
--parallel N and 1) and its `studies.tsv` (each run's wall time, Ray's start and the plan included), and
prints, per run: trials, wall, trials/hour, the time each trial spent booting and replaying, and which GPUs
its worker held; then the parallel efficiency, rate(N) / (N x rate(1)).

    python bench/parallel_efficiency.py [RUN_DIR]     # default: docs/real-gpu/ray/
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import optuna

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from autotune.study.trial_attrs import ATTR_RESULT  # noqa: E402


@dataclass(frozen=True)
class TrialTiming:
    number: int
    ratio: float | None
    gpus: str
    boot_s: float
    replay_s: float
    started_at: float
    finished_at: float


@dataclass(frozen=True)
class Run:
    name: str
    parallel: int  # the most trials that overlapped in time
    tp: int
    wall_s: float  # the whole `autotune run`, Ray's start and the plan included
    trials: list[TrialTiming]

    @property
    def span_s(self) -> float:
        return max(t.finished_at for t in self.trials) - min(t.started_at for t in self.trials)

    def per_hour(self, seconds: float) -> float:
        return len(self.trials) * 3600.0 / seconds


def _overlap(trials: list[TrialTiming]) -> int:
    events = sorted([(t.started_at, 1) for t in trials] + [(t.finished_at, -1) for t in trials])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def read_run(db: Path, wall_s: float) -> Run | None:
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    timings, tp = [], 1
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        tp = int(study.user_attrs.get("tp", tp) or tp)
        for trial in study.trials:
            result = trial.user_attrs.get(ATTR_RESULT) or {}
            if not result.get("started_at") or not result.get("finished_at") or result.get("boot_s") is None:
                continue
            worker = result.get("worker") or {}
            timings.append(TrialTiming(
                number=trial.number, ratio=trial.params.get("swa_full_tokens_ratio"),
                gpus=",".join(worker.get("gpu_ids") or []) or str(worker.get("cuda_visible_devices") or "?"),
                boot_s=float(result["boot_s"]), replay_s=float(result.get("replay_s") or 0.0),
                started_at=float(result["started_at"]), finished_at=float(result["finished_at"]),
            ))
    if not timings:
        return None
    timings.sort(key=lambda t: t.started_at)
    gpus_per_trial = max(len(t.gpus.split(",")) for t in timings)
    return Run(db.stem, _overlap(timings), max(tp, gpus_per_trial), wall_s, timings)


def read_walls(run_dir: Path) -> dict[str, float]:
    path = run_dir / "studies.tsv"
    if not path.exists():
        return {}
    with path.open() as f:
        return {row["name"]: float(row["wall_s"]) for row in csv.DictReader(f, delimiter="\t")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", type=Path, default=REPO / "docs/real-gpu/ray")
    args = parser.parse_args(argv)
    walls = read_walls(args.run_dir)
    runs = [r for db in sorted(args.run_dir.glob("*.db")) if (r := read_run(db, walls.get(db.stem, 0.0)))]
    if not runs:
        print(f"no trials with timings in {args.run_dir}/*.db", file=sys.stderr)
        return 2
    print("| run | trials at once | GPUs/trial | trials | wall s | trials/hour (wall) | first start to last end s | "
          "trials/hour (span) | boot s (median, range) | replay s (median) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in runs:
        boots = [t.boot_s for t in r.trials]
        print(f"| {r.name} | {r.parallel} | {r.tp} | {len(r.trials)} | {r.wall_s:.0f} | "
              f"{r.per_hour(r.wall_s) if r.wall_s else float('nan'):.1f} | {r.span_s:.0f} | {r.per_hour(r.span_s):.1f} | "
              f"{statistics.median(boots):.1f} ({min(boots):.1f}-{max(boots):.1f}) | "
              f"{statistics.median(t.replay_s for t in r.trials):.1f} |")
    print("\n| run | trial | ratio | GPUs | start s | boot s | replay s | end s |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for r in runs:
        t0 = r.trials[0].started_at
        for t in r.trials:
            print(f"| {r.name} | {t.number} | {t.ratio if t.ratio is not None else '-'} | {t.gpus} | "
                  f"{t.started_at - t0:.0f} | {t.boot_s:.1f} | {t.replay_s:.1f} | {t.finished_at - t0:.0f} |")
    # The machine's first wave compiles every kernel (a fresh lease: docs/real-gpu/boot-cost.md); the
    # steady state is what a long study sees, so it is also given without that wave.
    first = min(runs, key=lambda r: r.trials[0].started_at)
    first_end = min(t.finished_at for t in first.trials)
    cold = {(first.name, t.number) for t in first.trials if t.started_at < first_end}
    if cold:
        print(f"\ncold (the machine's first boots, compiling): {first.name} trials "
              f"{', '.join(str(n) for _, n in sorted(cold))}")

    def warm_trial_s(r: Run) -> float | None:
        durations = [t.finished_at - t.started_at for t in r.trials if (r.name, t.number) not in cold]
        return statistics.median(durations) if durations else None

    single = [r for r in runs if r.parallel == 1 and r.tp == 1]
    wide = [r for r in runs if r.parallel > 1 and r.tp == 1]
    if single and wide:
        base = single[0]
        print()
        for r in wide:
            for label, mine, theirs in (("wall", r.wall_s, base.wall_s), ("span", r.span_s, base.span_s)):
                if mine and theirs:
                    eff = r.per_hour(mine) / (r.parallel * base.per_hour(theirs))
                    print(f"parallel efficiency ({label}), {r.name} vs {base.name}: {r.per_hour(mine):.1f} / "
                          f"({r.parallel} x {base.per_hour(theirs):.1f}) = {eff:.0%}")
            mine, theirs = warm_trial_s(r), warm_trial_s(base)
            if mine and theirs:
                print(f"parallel efficiency (warm trials), {r.name} vs {base.name}: a warm trial takes {mine:.1f} s "
                      f"with {r.parallel} at once, {theirs:.1f} s alone: {r.parallel * 3600 / mine:.1f} vs "
                      f"{3600 / theirs:.1f} trials/hour = {theirs / mine:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
