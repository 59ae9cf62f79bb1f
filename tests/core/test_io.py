"""delia.core.io: atomic files and directories, read_json's None for what is not (yet) there."""

from __future__ import annotations

from pathlib import Path

import pytest

from delia.core.io import atomic_dir, atomic_write, read_json, swap_into_place, write_json


def test_write_json_round_trips_and_leaves_no_temp(tmp_path: Path) -> None:
    write_json(tmp_path / "a.json", {"x": [1, "é"]})
    assert read_json(tmp_path / "a.json") == {"x": [1, "é"]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_read_json_is_none_for_missing_or_torn_files(tmp_path: Path) -> None:
    assert read_json(tmp_path / "missing.json") is None
    atomic_write(tmp_path / "torn.json", '{"x": ')
    assert read_json(tmp_path / "torn.json") is None


def test_atomic_dir_replaces_the_old_directory_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "adapter"
    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("v1")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "weights").write_text("half")
        raise RuntimeError("killed mid-write")
    assert (target / "weights").read_text() == "v1"
    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("v2")
    assert (target / "weights").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_atomic_dir_keep_existing_lets_the_first_finished_copy_win(tmp_path: Path) -> None:
    target = tmp_path / "cache"
    with atomic_dir(target, keep_existing=True) as tmp:
        (tmp / "model").write_text("first")
    with atomic_dir(target, keep_existing=True) as tmp:
        (tmp / "model").write_text("second")
    assert (target / "model").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_swap_into_place_never_leaves_the_old_copy_behind(tmp_path: Path) -> None:
    final, partial = tmp_path / "mix", tmp_path / ".mix.partial"
    final.mkdir()
    (final / "old").write_text("x")
    partial.mkdir()
    (partial / "new").write_text("y")
    swap_into_place(partial, final)
    assert [p.name for p in final.iterdir()] == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mix"]
