"""Exit codes and one-line errors for what fails before any AWS call."""

from __future__ import annotations

from pathlib import Path

import pytest

from producer.cli import main
from producer.tail import state


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("telemax-producer: error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["generate"], "give --count N or --duration", id="no-count-no-duration"),
        pytest.param(["generate", "--count", "0"], "--count must be >= 1", id="count"),
        pytest.param(["generate", "--duration", "-1"], "--duration must be > 0", id="duration"),
        pytest.param(["generate", "--count", "1", "--rate", "-5"], "--rate", id="rate"),
        pytest.param(
            ["generate", "--count", "1", "--aggregate-max-bytes", "10"],
            "--aggregate-max-bytes must be",
            id="aggregate-size",
        ),
    ],
)
def test_generate_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, err = run(capsys, *argv)
    assert code == 2
    assert message in one_error_line(err)


def test_invalid_environment_names_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEMAX_PRODUCER_METRICS_PORT", "lots")
    code, err = run(capsys, "generate", "--count", "1")
    assert code == 2
    assert "TELEMAX_PRODUCER_METRICS_PORT='lots'" in one_error_line(err)


def test_tail_refuses_an_invalid_state_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    state_file = tmp_path / "state.json"
    state_file.write_text("{oops")
    code, err = run(capsys, "tail", str(tmp_path / "*.log"), "--state-file", str(state_file))
    assert code == 2
    assert "is not valid" in one_error_line(err)


def test_tail_refuses_a_state_file_in_use(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    state_file = tmp_path / "state.json"
    with state.locked(state_file):
        code, err = run(capsys, "tail", str(tmp_path / "*.log"), "--state-file", str(state_file))
    assert code == 2
    assert "in use by another" in one_error_line(err)


def test_tail_refuses_a_handler_that_does_not_import(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, err = run(
        capsys, "tail", "x.log", "--state-file", str(tmp_path / "s.json"), "--handler", "no:pe"
    )
    assert code == 2
    assert "--handler" in one_error_line(err)


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("generate", "tail"):
        with pytest.raises(SystemExit) as done:
            main([command, "--help"])
        assert done.value.code == 0
        out = capsys.readouterr().out
        assert "exit codes:" in out
        assert "unreadable file" in out
