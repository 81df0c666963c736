"""The command line's one error path: a user error is one line on stderr and exit status 1.

`user_errors` turns what a user can fix into its lines: a `ScenarioError` (one
``file:line: field: message`` line per problem), a `UserError`, a `RayConnectError`, and, where
the caller says so, exceptions of given types (an unknown controller name, an unwritable
``--out``) as ``subject: what was expected``. The `check_*` helpers (and `load_spec`) refuse bad
arguments before any work (and before Ray starts). Lines are written unwrapped, so a problem stays one line in a
terminal 80 columns wide. `diffplatoon.cli.main` routes everything through here.
"""

from __future__ import annotations

import errno
import math
import os
import pickle
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import typer
from rich.console import Console

from diffplatoon.cluster import RayConnectError
from diffplatoon.scenarios import ScenarioError, ScenarioSpec, load_scenario

err_console = Console(stderr=True)


class UserError(Exception):
    """A mistake the user can fix, as the lines to print: ``thing: what was expected, what was found``."""

    def __init__(self, *lines: str):
        self.lines = list(lines)
        super().__init__("\n".join(lines))


# Exceptions that building a named controller, policy or expert raises for a bad name, bad
# parameters or a missing or corrupt checkpoint (torch's weights-only loader raises
# UnpicklingError on a file that is not a checkpoint, RuntimeError on a torn archive).
POLICY_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, pickle.UnpicklingError, RuntimeError,
                                                  EOFError)

_OS_REASONS = {
    errno.EACCES: "expected a place this user may write to, got permission denied",
    errno.EPERM: "expected a place this user may write to, got operation not permitted",
    errno.EROFS: "expected a writable place, got a read-only file system",
    errno.ENOTDIR: "expected a folder in the path, found a file",
    errno.EEXIST: "expected a folder, found a file",
    errno.EISDIR: "expected a file, found a folder",
    errno.ENOSPC: "no space left on the device",
    errno.ENOENT: "expected an existing file or folder, found none",
}


def say(line: str) -> None:
    """One line on stderr, never wrapped or marked up (a scenario problem stays one line at 80 columns)."""
    err_console.print(line, markup=False, highlight=False, soft_wrap=True)


def os_error_line(exc: OSError, subject: str | None = None) -> str:
    """``subject: what was expected (path: reason)`` for an OSError on a path the user named."""
    reason = _OS_REASONS.get(exc.errno or -1, exc.strerror or str(exc))
    where = f" ({exc.filename})" if exc.filename and subject else ""
    return f"{subject or exc.filename or 'file'}: {reason}{where}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def print_problems(exc: ScenarioError | UserError | RayConnectError | OSError) -> None:
    """A user error as its lines on stderr: `file:line: field: message` for a scenario, one line otherwise."""
    if isinstance(exc, (ScenarioError, UserError)):
        for line in exc.lines:
            say(line)
    elif isinstance(exc, OSError):
        say(os_error_line(exc))
    else:
        say(_first_line(exc))


@contextmanager
def user_errors(subject: str | None = None, kinds: tuple[type[BaseException], ...] = (),
                expected: str = "") -> Iterator[None]:
    """Turn a user error raised inside into its printed lines and exit status 1 (no traceback).

    `ScenarioError`, `UserError` and `RayConnectError` always; exceptions of `kinds` too, as
    ``subject: expected: reason``: pass only types that, around this call, can only mean a
    bad argument (an unknown controller name, an unwritable --out).
    """
    try:
        yield
    except (ScenarioError, UserError, RayConnectError) as exc:
        print_problems(exc)
        raise typer.Exit(1) from None
    except kinds as exc:
        if isinstance(exc, OSError) and exc.errno in _OS_REASONS:
            say(os_error_line(exc, subject))
        elif isinstance(exc, (pickle.UnpicklingError, EOFError)) or type(exc) is RuntimeError:
            # torch's own text is a paragraph about weights_only; say what the file should be
            say(f"{subject}: expected a checkpoint file saved by diffplatoon, got one that cannot be loaded "
                 f"({type(exc).__name__})")
        else:
            say(f"{subject}: {expected + ': ' if expected else ''}{_first_line(exc)}")
        raise typer.Exit(1) from None


def check_output(option: str, path: Path, *, folder: bool) -> None:
    """Refuse an output path that cannot be written before any work is done (one line, exit 1)."""
    target = path if folder else path.parent
    with user_errors(f"{option} {path}", (OSError,), "expected a writable path"):
        existing = next(p for p in (target, *target.parents) if p.exists())
        if not existing.is_dir():  # name the file in the way, not the folder that cannot be made
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing))
        target.mkdir(parents=True, exist_ok=True)
        if not folder and path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not os.access(target, os.W_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(target))


def check_controller(option: str, name: str, spec: ScenarioSpec) -> None:
    """Build the controller `name` once so a bad name, parameter or checkpoint is refused up front."""
    from diffplatoon.run import make_controller

    with user_errors(f"{option} {name}", POLICY_ERRORS):
        make_controller(name, spec)


def check_seconds(seconds: float | None) -> None:
    """Refuse a --seconds that is not a positive, finite simulated time."""
    if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
        raise UserError(f"--seconds {seconds:g}: expected a positive, finite simulated time in seconds")


def check_workers(num_workers: int | None) -> None:
    """Refuse a --num-workers that is not a positive number of workers (None: the available CPUs)."""
    if num_workers is not None and num_workers < 1:
        raise UserError(f"--num-workers {num_workers}: expected a positive number of workers")


def check_timeout(episode_timeout: float) -> None:
    """Refuse an --episode-timeout that is not a positive, finite number of seconds."""
    if not (math.isfinite(episode_timeout) and episode_timeout > 0):
        raise UserError(f"--episode-timeout {episode_timeout:g}: expected a positive number of seconds")


def load_spec(name_or_path: str) -> ScenarioSpec:
    """The scenario a command argument names, or its problems printed and exit status 1."""
    with user_errors():
        return load_scenario(name_or_path)
