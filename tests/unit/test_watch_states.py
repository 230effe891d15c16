"""What watch mode counts as a change of a file (SPEC §8.3): content, appearance, disappearance;
not a touch, not a symlink swap to the same content."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from sidecar.watch import FileState, changed_files, read_states


def _swap(directory: Path, target: str) -> None:
    staged = directory / "..data_tmp"
    staged.symlink_to(target)
    os.rename(staged, directory / "..data")


def test_what_counts_as_a_change(tmp_path: Path) -> None:
    for version, text in (("v1", "one"), ("v2", "one"), ("v3", "three")):
        (tmp_path / version).mkdir()
        (tmp_path / version / "tls.crt").write_text(text)
    _swap(tmp_path, "v1")
    linked = tmp_path / "tls.crt"
    linked.symlink_to("..data/tls.crt")
    plain = tmp_path / "plain.crl"
    plain.write_text("crl 1")
    gone = tmp_path / "token"
    paths = [linked, plain, gone]

    states = read_states(paths, {})
    assert changed_files(states, read_states(paths, states)) == []

    os.utime(plain, ns=(1, 1))  # touched: same content
    _swap(tmp_path, "v2")  # swapped to a directory with the same content
    after = read_states(paths, states)
    assert after[linked].target != states[linked].target
    assert changed_files(states, after) == []
    states = after

    _swap(tmp_path, "v3")
    plain.write_text("crl 2")
    gone.write_text("appeared")
    after = read_states(paths, states)
    assert changed_files(states, after) == [linked, plain, gone]
    states = after

    plain.unlink()
    assert changed_files(states, read_states(paths, states)) == [plain]


def test_unchanged_stat_reuses_the_digest(tmp_path: Path) -> None:
    path = tmp_path / "big.crl"
    path.write_bytes(b"x" * 10)
    states = read_states([path], {})
    assert read_states([path], states)[path] is states[path]


def test_a_fifo_in_place_of_a_file_is_not_opened(tmp_path: Path) -> None:
    path = tmp_path / "crl.pem"
    path.write_text("crl")
    states = read_states([path], {})
    path.unlink()
    os.mkfifo(path)  # opening it for reading would wait for a writer forever
    result: list[dict[Path, FileState]] = []
    reader = threading.Thread(target=lambda: result.append(read_states([path], states)), daemon=True)
    reader.start()
    reader.join(5)
    assert result, "reading the FIFO's state blocked"
    assert changed_files(states, result[0]) == [path]
