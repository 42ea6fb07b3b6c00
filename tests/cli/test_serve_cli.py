"""`blastscope serve` refuses bad settings with one line before loading anything (the browser test serves for real)."""

from __future__ import annotations

import socket
from pathlib import Path

from blastscope.cli import build_parser, main


def test_defaults_are_the_documented_ones() -> None:
    args = build_parser().parse_args(["serve", "runs/x"])
    assert (args.host, args.port) == ("127.0.0.1", 8000)
    assert (args.max_file_mb, args.max_files, args.max_pixels) == (20.0, 32, 50e6)


def test_bad_limits_exit_2(tmp_path: Path, capsys) -> None:
    assert main(["serve", str(tmp_path), "--max-files", "0"]) == 2
    assert "must be positive" in capsys.readouterr().err


def test_port_out_of_range_exits_2(tmp_path: Path, capsys) -> None:
    for port in ("70000", "-1"):
        assert main(["serve", str(tmp_path), "--port", port]) == 2
        assert "--port must be between 0 and 65535" in capsys.readouterr().err


def test_busy_port_exits_2(tmp_path: Path, capsys) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(tmp_path), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_not_a_run_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["serve", str(tmp_path), "--port", "0"]) == 2
    assert "not a training run" in capsys.readouterr().err
