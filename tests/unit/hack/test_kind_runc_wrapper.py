"""hack/kind/runc-wrapper: runc for kind's dockerd, minus CAP_SYS_RESOURCE.

runc itself is replaced (`TETHER_KIND_RUNC`, the wrapper's seam) by a script that
records its arguments, so what the wrapper hands over is what is checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
WRAPPER = ROOT / "hack" / "kind" / "runc-wrapper"
ALL_CAPS = ["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_SYS_RESOURCE", "CAP_NET_ADMIN"]
KEPT = [c for c in ALL_CAPS if c != "CAP_SYS_RESOURCE"]


def _caps(names: list[str]) -> dict[str, list[str]]:
    return {kind: list(names) for kind in ("bounding", "effective", "permitted", "ambient")}


def _run(tmp_path: Path, *args: str) -> list[str]:
    """Run the wrapper with `args`; return the arguments the fake runc received."""
    fake = tmp_path / "runc"
    record = tmp_path / "argv.json"
    fake.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"json.dump(sys.argv[1:], open({str(record)!r}, 'w'))\n"
    )
    fake.chmod(0o755)
    env = {"TETHER_KIND_RUNC": str(fake), "PATH": "/usr/bin:/bin"}
    subprocess.run([str(WRAPPER), *args], check=True, env=env, cwd=tmp_path, timeout=30)
    argv: list[str] = json.loads(record.read_text())
    return argv


def _write(path: Path, obj: dict[str, Any]) -> Path:
    path.write_text(json.dumps(obj))
    return path


def test_create_drops_sys_resource_from_the_bundle_and_runs_runc_with_the_same_arguments(
    tmp_path: Path,
) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    config = _write(bundle / "config.json", {"process": {"capabilities": _caps(ALL_CAPS)}})
    args = ["--root", "/run/x", "--log-format", "json", "create", "--bundle", str(bundle), "c1"]
    assert _run(tmp_path, *args) == args
    assert json.loads(config.read_text())["process"]["capabilities"] == _caps(KEPT)


def test_create_without_bundle_flag_edits_the_config_in_the_working_directory(
    tmp_path: Path,
) -> None:
    config = _write(tmp_path / "config.json", {"process": {"capabilities": _caps(ALL_CAPS)}})
    _run(tmp_path, "create", "c1")
    assert json.loads(config.read_text())["process"]["capabilities"] == _caps(KEPT)


def test_exec_drops_it_from_the_process_file(tmp_path: Path) -> None:
    process = _write(tmp_path / "process.json", {"args": ["sh"], "capabilities": _caps(ALL_CAPS)})
    _run(tmp_path, "exec", "--process", str(process), "--detach", "c1")
    assert json.loads(process.read_text())["capabilities"] == _caps(KEPT)


def test_an_unprivileged_config_is_left_as_it_is(tmp_path: Path) -> None:
    text = json.dumps({"process": {"capabilities": _caps(KEPT)}}, indent=1)
    config = tmp_path / "config.json"
    config.write_text(text)
    _run(tmp_path, "run", "--bundle", str(tmp_path), "c1")
    assert config.read_text() == text


def test_other_commands_pass_straight_through(tmp_path: Path) -> None:
    assert _run(tmp_path, "--root", "/run/x", "delete", "--force", "c1") == [
        "--root",
        "/run/x",
        "delete",
        "--force",
        "c1",
    ]
