"""The shipped model catalog and `load_model`, which resolves any model reference.

A reference is a catalog name, alias or hub id (case-insensitive), a directory holding a
config.json, or a config.json file. Nothing is ever fetched: hub ids only name catalog entries.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from autotune.models.errors import ModelConfigError, ModelNotFound
from autotune.models.spec import ModelSpec, read_config_file, spec_from_config

_CATALOG_DIR = resources.files("autotune.models") / "catalog"


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    hub_id: str
    aliases: tuple[str, ...]
    published: dict[str, Any]

    @property
    def config_file(self) -> Path:
        return Path(str(_CATALOG_DIR / f"{self.name}.json"))

    def names(self) -> tuple[str, ...]:
        return (self.name, self.hub_id, *self.aliases)


@lru_cache(maxsize=1)
def catalog_entries() -> tuple[CatalogEntry, ...]:
    data = yaml.safe_load((_CATALOG_DIR / "catalog.yaml").read_text(encoding="utf-8"))
    entries = []
    for name, info in data["models"].items():
        published = {k: info[k] for k in ("params", "weight_bytes", "vision_bytes", "notes") if k in info}
        entries.append(
            CatalogEntry(name=name, hub_id=info["hub_id"], aliases=tuple(info.get("aliases", ())), published=published)
        )
    return tuple(entries)


@lru_cache(maxsize=1)
def _alias_index() -> dict[str, CatalogEntry]:
    index: dict[str, CatalogEntry] = {}
    for entry in catalog_entries():
        for alias in entry.names():
            index[alias.lower()] = entry
    return index


def find_entry(reference: str) -> CatalogEntry | None:
    return _alias_index().get(reference.strip().lower())


def suggest(reference: str, limit: int = 3) -> list[str]:
    names = sorted({alias for entry in catalog_entries() for alias in entry.names()})
    lowered = {n.lower(): n for n in names}
    close = difflib.get_close_matches(reference.lower(), list(lowered), n=limit, cutoff=0.5)
    if not close:  # substring hits catch "26b" -> "26B-A4B"
        close = [n for n in lowered if reference.lower() in n][:limit]
    return [lowered[c] for c in close]


@lru_cache(maxsize=64)
def _catalog_spec(name: str) -> ModelSpec:
    entry = next(e for e in catalog_entries() if e.name == name)
    data = read_config_file(entry.config_file)
    return spec_from_config(
        data, path=str(entry.config_file), name=entry.name, hub_id=entry.hub_id, published=entry.published
    )


def load_model(reference: str) -> ModelSpec:
    """Resolve a catalog alias / hub id, a directory with config.json, or a config.json file."""
    path = Path(reference).expanduser()
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            raise ModelConfigError(
                str(path), None, "holds no config.json; pass the model directory (the one with config.json) or a catalog name"
            )
        return spec_from_config(read_config_file(config), path=str(config), name=path.name)
    if path.is_file():
        return spec_from_config(read_config_file(path), path=str(path), name=path.stem if path.name != "config.json" else None)
    entry = find_entry(reference)
    if entry is None:
        raise ModelNotFound(reference, suggest(reference))
    return _catalog_spec(entry.name)


def catalog_specs() -> list[ModelSpec]:
    return [_catalog_spec(entry.name) for entry in catalog_entries()]
