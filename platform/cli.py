"""The `diffplatoon` command line: one entry point over scenarios, simulation, evaluation and training.

This module is the root command: it registers the command groups, each a thin layer over the
library in its own module (parse arguments, call one library function, print with rich):

- `diffplatoon.cli_scenario`: `scenario list|validate|show|schema|render|run`;
- `diffplatoon.cli_evaluate`: `evaluate`, `search`, `report`;
- `diffplatoon.cli_train`: `demos collect|aggregate`, `pretrain`, `train`;
- here: `demo` and `--version`.

Errors a user can fix take one path (`diffplatoon.cli_errors` and `main`): a bad scenario or
config file (``file:line: field: message``), an unknown controller or policy, a corrupt or
missing checkpoint, an output path that cannot be written, a bad flag value, an unreachable
Ray cluster. Each is one unwrapped line on stderr naming the thing and what was expected, exit
status 1 (2 for a malformed command line), never a traceback. Anything else is a bug and keeps
its traceback. Arguments are checked before Ray starts.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import typer
from rich.console import Console

try:  # typer vendors click from 0.2x on; its usage errors are those classes
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer on the public click
    from click import exceptions as click_exceptions

from diffplatoon.cli_errors import check_output, os_error_line, say, user_errors
from diffplatoon.cli_evaluate import evaluate_command, report_command, search_command
from diffplatoon.cli_scenario import one_line_summary, scenario_app, traffic_summary
from diffplatoon.cli_train import demos_app, pretrain_command, train_command

__all__ = ["app", "main", "one_line_summary", "traffic_summary"]

console = Console()

app = typer.Typer(
    help="diffplatoon: cooperative platoon driving on highway-env roads — scenarios, simulation, "
    "safety evaluation and training.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(scenario_app, name="scenario")
app.add_typer(demos_app, name="demos")
app.command("evaluate")(evaluate_command)
app.command("search")(search_command)
app.command("report")(report_command)
app.command("pretrain")(pretrain_command)
app.command("train")(train_command)


def _version() -> str:
    try:
        return version("diffplatoon")
    except PackageNotFoundError:  # running from a source tree without an install
        return "0+unknown"


@app.callback(invoke_without_command=True)
def _root(
    show_version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if show_version:
        console.print(f"diffplatoon {_version()}")
        raise typer.Exit()


@app.command("demo")
def demo(out: Path = typer.Option(Path("runs/demo"), "--out", help="Folder for the demo's outputs.")) -> None:
    """The small end-to-end tour `make demo` runs."""
    from diffplatoon.demo import run_demo

    check_output("--out", out, folder=True)
    run_demo(out, console)


def main() -> None:
    """Console-script entry point: every user error is one line on stderr, never a traceback.

    Commands refuse their arguments through `user_errors`; what reaches here unconverted is a
    user error raised deeper (a scenario error, an unwritable or missing file named by the
    user) or a malformed command line (exit 2). Other exceptions are bugs: their traceback shows.
    """
    try:
        with user_errors():
            code = app(standalone_mode=False)
    except click_exceptions.NoArgsIsHelpError as exc:  # `diffplatoon scenario`: the group's help
        exc.show()
        code = exc.exit_code
    except click_exceptions.ClickException as exc:  # a malformed command line: one line instead of rich's panel
        where = f"{exc.ctx.command_path}: " if getattr(exc, "ctx", None) is not None else ""
        say(f"{where}{exc.format_message()} (see --help)")
        code = exc.exit_code
    except typer.Abort:
        code = 1
    except typer.Exit as exc:
        code = exc.exit_code
    except (FileNotFoundError, FileExistsError, PermissionError, NotADirectoryError, IsADirectoryError) as exc:
        say(os_error_line(exc))
        code = 1
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
