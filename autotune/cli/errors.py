"""One place that turns the project's input errors into a clear message and a non-zero exit."""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import typer
from rich.markup import escape

from autotune.cli.console import err_console
from autotune.hardware.profile import UnknownGPU
from autotune.models.errors import ModelError
from autotune.pools.budget import InsufficientMemory
from autotune.pools.inference import InconsistentLayout
from autotune.pools.sizing import NotEnoughMemory, RatioOutOfRange, SWAPoolRefused


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

# Packages a command may need that a slim install can lack, and how to get each. A missing module
# that is not here is a bug in this package and keeps its traceback.
OPTIONAL_PACKAGES: dict[str, str] = {
    "optuna_dashboard": "pip install 'swa-autotune[dashboard]'",
    "plotly": "pip install 'swa-autotune[dashboard]'",
    "kaleido": "pip install kaleido (or write HTML: --out report.html)",
    "psycopg": "pip install 'swa-autotune[postgres]'",
    "ray": "pip install 'ray[default]' (or run without Ray: --runner local)",
    "sglang": "install SGLang on the GPU node (docs/air-gapped.md for nodes without network), or use --backend sim",
}

F = TypeVar("F", bound=Callable[..., object])


def missing_package(exc: ModuleNotFoundError) -> str | None:
    """`error:` text for a missing optional package, or None when the module is not an optional one."""
    top = (exc.name or "").split(".")[0]
    hint = OPTIONAL_PACKAGES.get(top)
    return f"{top} is not installed, and this command needs it: {hint}" if hint else None


def fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}")  # messages quote [extras] and [paths]
    raise typer.Exit(code)


def user_errors(func: F) -> F:
    """Decorator for commands: input errors print `error: ...` and exit 2, no traceback."""

    @functools.wraps(func)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return func(*args, **kwargs)
        except USER_ERRORS as exc:
            fail(str(exc))
        except ModuleNotFoundError as exc:
            message = missing_package(exc)
            if message is None:
                raise
            fail(message)
        return None

    return wrapper  # type: ignore[return-value]
