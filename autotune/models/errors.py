"""Errors of the model catalog: each names what is wrong and how to fix it."""

from __future__ import annotations


class ModelError(ValueError):
    """Base class: a model reference or config that cannot be used."""


class ModelNotFound(ModelError):
    def __init__(self, reference: str, suggestions: list[str]) -> None:
        self.reference = reference
        self.suggestions = suggestions
        hint = f" Did you mean: {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(
            f"unknown model {reference!r}: not a catalog name, alias or hub id, and no such file or "
            f"directory.{hint} Run `autotune models` for the catalog, or pass a directory holding a config.json."
        )


class ModelConfigError(ModelError):
    def __init__(self, path: str, key: str | None, problem: str) -> None:
        self.path = path
        self.key = key
        where = f"{path}: key {key!r}" if key else path
        super().__init__(f"{where} {problem}")
