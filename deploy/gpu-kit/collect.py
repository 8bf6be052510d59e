"""Turn what validate.sh brought back into the repository's record of a real study.

    python deploy/gpu-kit/collect.py --logs DIR [--logs DIR ...] --db real-study.db --out docs/real-gpu

Writes, under --out: logs/<trial>.log, each server log trimmed to what a reader needs (the start-up
up to "fired up", every decode line, every retraction, the last 20 lines; the prefill lines are
counted, not kept), logs/<trial>.server_info.json (as the server answered), and series/<trial>.csv,
the server's own /metrics time series as the trial scraped it (from the study database).
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import optuna

READY = "The server is fired up and ready to roll!"
KEEP = ("Decode batch", "Retract requests", "KV cache pool is full")


def trim(text: str) -> str:
    lines = text.splitlines()
    ready = next((i for i, line in enumerate(lines) if READY in line), len(lines) - 1)
    head = lines[: ready + 1]
    body = lines[ready + 1 : -20]
    kept = [line for line in body if any(k in line for k in KEEP)]
    prefills = sum("Prefill batch" in line for line in body)
    dropped = len(body) - len(kept)
    note = f"[collect.py: {dropped} lines dropped after start-up, {prefills} of them 'Prefill batch' lines]"
    return "\n".join(head + kept + [note] + lines[-20:]) + "\n"


def write_series(db: str, out: Path) -> int:
    count = 0
    for summary in optuna.get_all_study_summaries(db):
        study = optuna.load_study(study_name=summary.study_name, storage=db)
        workload = study.user_attrs.get("workload", summary.study_name.split("|")[2])
        for trial in study.trials:
            samples = (trial.user_attrs.get("result") or {}).get("samples") or []
            if not samples:
                continue
            path = out / f"{study.user_attrs.get('model', 'model')}-{workload}-t{trial.number}.csv"
            columns = sorted({key for sample in samples for key in sample})
            with path.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=columns)
                writer.writeheader()
                writer.writerows(samples)
            count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logs", type=Path, action="append", required=True, help="a logs/ folder from validate.sh")
    parser.add_argument("--db", required=True, help="the study database (a path or sqlite:/// URL)")
    parser.add_argument("--out", type=Path, default=Path("docs/real-gpu"))
    args = parser.parse_args()
    db = args.db if "://" in args.db else f"sqlite:///{args.db}"
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    (args.out / "series").mkdir(parents=True, exist_ok=True)
    for folder in args.logs:
        for log in sorted(folder.glob("**/*.log")):
            if "models" in log.parts:
                continue
            (args.out / "logs" / log.name).write_text(trim(log.read_text(encoding="utf-8", errors="replace")), encoding="utf-8")
            info = log.with_suffix(".server_info.json")
            if info.exists():
                shutil.copyfile(info, args.out / "logs" / info.name)
    print(f"series: {write_series(db, args.out / 'series')} trials")


if __name__ == "__main__":
    main()
