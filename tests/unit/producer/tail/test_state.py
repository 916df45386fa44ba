"""The tail's state file: round trip, atomic replacement, clear errors, one owner."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernel.errors import ConfigError
from producer.tail import state
from producer.tail.machine import FileId, SavedFile


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    files = [SavedFile("/l/a.log", FileId(1, 2), 30), SavedFile("/l/b.log", FileId(1, 3), 0)]
    state.save(path, files)
    assert state.load(path) == files
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"], "no temporary file left"


def test_missing_file_means_no_state(tmp_path: Path) -> None:
    assert state.load(tmp_path / "absent.json") is None


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"{not json", id="not-json"),
        pytest.param(b'{"version": 2, "files": []}', id="version"),
        pytest.param(b'{"version": 1, "files": [{"path": "a"}]}', id="missing-fields"),
        pytest.param(b"[]", id="not-an-object"),
    ],
)
def test_invalid_state_is_a_one_line_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="move it away to start over") as caught:
        state.load(path)
    assert "\n" not in str(caught.value)


def test_second_owner_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state.json"
    with (
        state.locked(path),
        pytest.raises(ConfigError, match="in use by another"),
        state.locked(path),
    ):
        pass
    with state.locked(path):  # released: usable again
        pass


def test_default_path_honours_xdg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", "/srv/state")
    assert state.default_path() == Path("/srv/state/telemax/tail-state.json")
