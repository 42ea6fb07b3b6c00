"""Files written whole or not at all, readable as any file the user writes."""

from __future__ import annotations

import os
from pathlib import Path

from blastscope.storage import write_text_atomically


def test_an_atomically_written_file_gets_the_mode_open_would_give_it(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    path = tmp_path / "config.yaml"
    write_text_atomically(path, "model: cnn\n")
    assert path.read_text() == "model: cnn\n"
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600: a shared run folder stays readable
    assert [entry.name for entry in tmp_path.iterdir()] == ["config.yaml"]  # no temporary file left beside it
