"""Exported defaults: SGLang's own `--config` YAML per (model, workload), plus an index.

Serving needs no patch: `python -m sglang.launch_server --config FILE ...` reads the file, and any
flag given on the command line still wins (SGLang places file arguments before the command line).
Keys are SGLang's hyphenated flag names and only what was tuned. Files are written atomically.
Simulated results are refused as serving defaults unless asked for, and then say so in the file.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from autotune.sglang_facts import DEFAULT_RATIO, LAUNCH_MODULE, to_flag
from autotune.store import ExportRecord, OptimumRecord, Store

INDEX = "index.yaml"


class SimulatedExportRefused(ValueError):
    pass


def atomic_write(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it: readers see the old
    file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def config_flags(params: dict[str, Any]) -> dict[str, Any]:
    """Tuned parameters as SGLang --config keys (hyphenated long flag names)."""
    return {to_flag(name): value for name, value in sorted(params.items())}


def config_text(flags: dict[str, Any], provenance: dict[str, Any]) -> str:
    header = [
        f"# SGLang --config file written by swa-autotune. Use: python -m {LAUNCH_MODULE} --config THIS_FILE ...",
        "# A flag given on the command line overrides the value here.",
    ]
    if provenance.get("simulated"):
        header.insert(0, "# SIMULATED: tuned on autotune's simulated SGLang, not measured on a GPU. Verify before serving.")
    header += [f"# {key}: {value}" for key, value in provenance.items()]
    return "\n".join(header) + "\n" + yaml.safe_dump(flags, sort_keys=True)


def file_name(model: str, workload: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{model}__{workload}")
    return f"{safe}.yaml"


@dataclass(frozen=True)
class Exported:
    model: str
    workload: str
    path: Path
    ratio: float
    simulated: bool
    memory_mode: str = "static"  # "unified" when unified memory beat the tuned ratio (the file sets it)


def export_optima(
    store: Store, out_dir: Path, *, model: str | None = None, allow_simulated: bool = False
) -> list[Exported]:
    optima: list[OptimumRecord] = store.optima(model=model)
    if not optima:
        where = f" for {model}" if model else ""
        raise ValueError(f"no tuned optimum{where} in {store.display_url}: run `autotune run --model ...` first")
    simulated = [o for o in optima if o.simulated]
    if simulated and not allow_simulated:
        names = ", ".join(sorted({f"{o.model}/{o.workload}" for o in simulated}))
        raise SimulatedExportRefused(
            f"refusing to export simulated optima as serving defaults ({names}): they come from the simulator, not a "
            "GPU. Tune with --backend sglang, or pass --allow-simulated to export them marked as simulated."
        )
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    index_path = out_dir / INDEX
    index = yaml.safe_load(index_path.read_text(encoding="utf-8")) if index_path.exists() else {}
    index = index if isinstance(index, dict) else {}
    entries: dict[str, Any] = dict(index.get("models") or {})
    exported = []
    for optimum in optima:
        provenance = {
            "model": optimum.model, "gpu": optimum.gpu, "workload": optimum.workload, "study": optimum.study_name,
            "trials": optimum.trials, "backend": optimum.backend, "simulated": optimum.simulated,
            "server_version": optimum.server_version, "objective": f"{optimum.objective_name} {optimum.objective_value:.1f}",
            f"gain_over_{DEFAULT_RATIO}": None if optimum.gain is None else round(optimum.gain, 4), "exported_at": now,
        }
        flags = config_flags(optimum.params)
        mode = memory_mode_winner(store, optimum)  # `autotune run --modes static,unified`: the winner and its evidence
        if mode is not None:
            provenance.update(mode["provenance"])
            flags = mode["flags"] or flags
        path = out_dir / file_name(optimum.model, optimum.workload)
        atomic_write(path, config_text(flags, provenance))
        entries.setdefault(optimum.model, {})[optimum.workload] = {"file": path.name, "ratio": optimum.ratio, **provenance}
        store.record_export(ExportRecord(model=optimum.model, path=str(path), ratio=optimum.ratio, provenance=provenance))
        exported.append(Exported(optimum.model, optimum.workload, path, optimum.ratio, optimum.simulated,
                                 provenance.get("memory_mode", "static")))
    atomic_write(index_path, yaml.safe_dump({"generated_by": "swa-autotune", "updated_at": now, "models": entries}, sort_keys=True))
    return exported


def memory_mode_winner(store: Store, optimum: OptimumRecord) -> dict[str, Any] | None:
    """Where unified memory was measured beside this optimum's study (autotune/study/modes.py): the
    flags of the winner (`enable-unified-memory: true` when it beat the tuned ratio, else None: keep
    the ratio) and the evidence, for the file's header and the index."""
    from autotune.study.modes import UNIFIED, UNIFIED_FLAG, mode_outcome, winner

    unified = mode_outcome(store.url.render_as_string(hide_password=False), optimum.study_name)
    if unified is None:
        return None
    won = winner(optimum.objective_value, optimum.ratio, unified)
    evidence = won["evidence"][UNIFIED]
    provenance = {
        "memory_mode": won["mode"],
        "unified_study": evidence["study"],
        "unified_value": None if evidence["value"] is None else round(evidence["value"], 1),
        "unified_outcome": evidence["failure"] or "ok",
        "static_ratio": optimum.ratio,
        "static_value": round(optimum.objective_value, 1),
    }
    return {"flags": {UNIFIED_FLAG: True} if won["mode"] == UNIFIED else None, "provenance": provenance}
