"""`blastscope serve` refuses bad settings with one line before loading anything (the browser test serves for real)."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from blastscope.cli import build_parser, main
from blastscope.cli.serve import is_loopback
from blastscope.data.synth import smear_field
from blastscope.serving import connections


def test_defaults_are_the_documented_ones() -> None:
    args = build_parser().parse_args(["serve", "runs/x"])
    assert (args.host, args.port) == ("127.0.0.1", 8000)
    assert (args.max_file_mb, args.max_files, args.max_pixels) == (20.0, 32, 50e6)


def test_bad_limits_exit_2_before_anything_loads(tmp_path: Path, capsys) -> None:
    """One argparse line naming the option (each option's refusals: test_arguments), also for nan and inf."""
    for option, value in (("--max-files", "0"), ("--max-file-mb", "nan"), ("--keep-alive", "inf"), ("--port", "-1")):
        with pytest.raises(SystemExit) as stop:
            main(["serve", str(tmp_path), option, value])
        assert stop.value.code == 2
        assert f"blastscope serve: error: argument {option}: {value!r} is not " in capsys.readouterr().err


@pytest.mark.parametrize(
    ("max_pixels", "memory"), [("1e3", "12 KB"), ("1", "12 bytes"), ("5e7", "572 MB"), ("1e5", "1 MB")]
)
def test_the_decoding_memory_is_printed_in_a_unit_that_shows_it(
    tiny_run: Path, monkeypatch, capsys, max_pixels: str, memory: str
) -> None:
    """12 bytes a pixel of --max-pixels: 1e3 pixels printed "0 MB"."""
    monkeypatch.setattr(connections, "serve", lambda app, host, port, capacity: None)
    assert main(["serve", str(tiny_run), "--port", "0", "--max-pixels", max_pixels]) == 0
    assert f"decoding memory: {memory} shared by all requests" in capsys.readouterr().out


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


def test_only_loopback_hosts_count_as_this_machine() -> None:
    assert all(is_loopback(host) for host in ("127.0.0.1", "127.1.2.3", "::1", "localhost"))
    assert not any(is_loopback(host) for host in ("0.0.0.0", "::", "192.168.1.5", "lab-server"))


def test_a_host_other_machines_reach_is_warned_about(tiny_run: Path, monkeypatch, capsys) -> None:
    served: list[str] = []
    monkeypatch.setattr(connections, "serve", lambda app, host, port, capacity: served.append(host))
    assert main(["serve", str(tiny_run), "--host", "0.0.0.0", "--port", "0"]) == 0
    assert served == ["0.0.0.0"]
    assert "warning: --host 0.0.0.0 makes the service reachable from other machines" in capsys.readouterr().err


def test_a_threshold_for_a_multi_class_run_is_refused_naming_serve(
    tiny_three_class_run: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(connections, "serve", lambda app, host, port, capacity: None)
    assert main(["serve", str(tiny_three_class_run), "--threshold", "0.3", "--port", "0"]) == 2
    assert capsys.readouterr().err.startswith("blastscope: error: serve --threshold needs a two-class run")


def test_scan_takes_the_red_cell_diameter_serve_was_given(tiny_run: Path, monkeypatch) -> None:
    """As `blastscope scan --red-cell-diameter` does; without it, 1/6.4 of the longer side as there (100 px here)."""
    apps = []
    monkeypatch.setattr(connections, "serve", lambda app, host, port, capacity: apps.append(app))
    field = io.BytesIO()
    Image.fromarray(smear_field(0, height=480, width=640, white_cells=3, cut_cells=1).image).save(field, format="PNG")
    for given, used in ((["--red-cell-diameter", "60"], 60.0), ([], 100.0)):
        assert main(["serve", str(tiny_run), "--port", "0", *given]) == 0
        response = TestClient(apps.pop()).post("/scan", files=[("files", ("field.png", field.getvalue(), "image/png"))])
        assert response.status_code == 200 and response.json()["scans"][0]["red_cell_diameter"] == used
