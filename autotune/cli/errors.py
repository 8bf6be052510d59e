"""One place that turns the project's input errors into a clear message and a non-zero exit."""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import typer
from rich.console import Console

from autotune.hardware.profile import UnknownGPU
from autotune.models.errors import ModelError
from autotune.pools.budget import InsufficientMemory
from autotune.pools.inference import InconsistentLayout
from autotune.pools.sizing import NotEnoughMemory, RatioOutOfRange, SWAPoolRefused

err_console = Console(stderr=True, highlight=False, soft_wrap=True)

# Errors that mean "the input is wrong": message, exit 2. Anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[Exception], ...] = (
    ModelError,
    UnknownGPU,
    RatioOutOfRange,
    SWAPoolRefused,
    NotEnoughMemory,
    InsufficientMemory,
    InconsistentLayout,
    ValueError,
)

F = TypeVar("F", bound=Callable[..., object])


def fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def user_errors(func: F) -> F:
    """Decorator for commands: input errors print `error: ...` and exit 2, no traceback."""

    @functools.wraps(func)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return func(*args, **kwargs)
        except USER_ERRORS as exc:
            fail(str(exc))
        return None

    return wrapper  # type: ignore[return-value]
