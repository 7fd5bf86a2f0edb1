"""The central error handler of the ``medvl`` command line (``cli/main.py``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from medvl.cli.main import build_app
from medvl.config.loading import ConfigError
from medvl.data.adapters.base import DatasetFormatError, DatasetLayoutError
from medvl.data.images import ImageLoadError
from medvl.data.manifest import ManifestError
from medvl.evaluation.alignment.study import StudyError
from medvl.evaluation.alignment.validation import AlignmentInputError
from medvl.evaluation.embeddings import EmbeddingSetError
from medvl.evaluation.zeroshot import PromptError
from medvl.objectives.base import MissingInputError, ObjectiveInputError
from medvl.training.checkpoint import CheckpointError
from medvl.utils.errors import MedvlError, UserInputError
from medvl.utils.rundir import RunDirExistsError

DOMAIN_ERRORS = [
    (ConfigError, ValueError), (ManifestError, ValueError), (EmbeddingSetError, ValueError),
    (ImageLoadError, ValueError), (DatasetLayoutError, FileNotFoundError), (DatasetFormatError, ValueError),
    (PromptError, ValueError), (StudyError, ValueError), (AlignmentInputError, ValueError),
    (ObjectiveInputError, ValueError), (MissingInputError, KeyError), (RunDirExistsError, FileExistsError),
    (CheckpointError, RuntimeError),
]


@pytest.mark.parametrize(("error", "historic_base"), DOMAIN_ERRORS, ids=[e.__name__ for e, _ in DOMAIN_ERRORS])
def test_domain_errors_are_user_input_errors(error: type[Exception], historic_base: type[Exception]) -> None:
    assert issubclass(error, UserInputError) and issubclass(error, MedvlError)
    assert issubclass(error, historic_base)  # existing `except ValueError:` clauses still catch them


def _app_with(exc: BaseException) -> typer.Typer:
    app = build_app()

    @app.command("boom")
    def boom() -> None:
        raise exc

    return app


def test_any_user_input_error_exits_2_without_traceback() -> None:
    result = CliRunner().invoke(_app_with(ManifestError("manifest m.csv: record 'r3' has no image")), ["boom"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: manifest m.csv: record 'r3' has no image"
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_other_errors_are_not_swallowed() -> None:
    result = CliRunner().invoke(_app_with(ZeroDivisionError("bug")), ["boom"])
    assert result.exit_code == 1 and isinstance(result.exception, ZeroDivisionError)


def test_console_script_prints_one_line(tmp_path: Path) -> None:
    """Through the real entry point: stderr is one ``error:`` line naming the file, exit code 2."""
    missing = tmp_path / "nope.yaml"
    proc = subprocess.run([sys.executable, "-c", "from medvl.cli.main import main; main()", "train", str(missing)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"error: config file not found: {missing}"
    assert "Traceback" not in proc.stderr and not (tmp_path / "runs").exists()


def test_split_of_missing_manifest_exits_2(tmp_path: Path) -> None:
    app = build_app()
    result = CliRunner().invoke(app, ["data", "split", str(tmp_path / "m.csv"), "--out", str(tmp_path / "o.csv"),
                                      "--folds", "1"])
    assert result.exit_code == 2 and result.output.startswith("error: ")
