"""Fast start-up of the command line (issue 19, part 4): what ``argosy`` skips must not change
what it does — the one-command app parses and helps as the whole one, the SDK's names are the
same when imported on first use, and the collector is on again after the run's imports."""

from __future__ import annotations

import gc
import json
import subprocess
import sys

import pytest
import typer.main
from typer.testing import CliRunner

from argosy.cli.main import app, app_for, importing

NAMES = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", NAMES)
def test_the_one_command_app_helps_and_fails_as_the_whole_one(name: str) -> None:
    runner = CliRunner()
    one = typer.main.get_command(app_for([name]))
    assert list(one.commands) == [name]  # type: ignore[attr-defined]
    for args in ([name, "--help"], [name, "--no-such-option"]):
        whole = runner.invoke(app, args, prog_name="argosy")
        alone = runner.invoke(app_for(args), args, prog_name="argosy")
        assert (alone.exit_code, alone.output) == (whole.exit_code, whole.output), args


def test_global_options_and_unknown_commands_get_the_whole_app() -> None:
    assert app_for([]) is app
    assert app_for(["--server", "http://x", "run", "f.py"]) is app
    assert app_for(["no-such-command"]) is app


def test_the_sdk_is_imported_on_first_use_with_the_same_names() -> None:
    code = (
        "import json, sys, argosy\n"
        "before = sorted(m for m in sys.modules if m.startswith('argosy.sdk'))\n"
        "from argosy import step, pipeline, If, Metrics\n"
        "from argosy.sdk.step import step as defined\n"
        "print(json.dumps([before, step is defined and argosy.step is defined]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == [[], True]


def test_the_collector_is_on_again_after_imports_that_failed() -> None:
    assert gc.isenabled()
    with pytest.raises(ImportError), importing():
        assert not gc.isenabled()
        import argosy.no_such_module  # type: ignore[import-not-found]  # noqa: F401
    assert gc.isenabled()
