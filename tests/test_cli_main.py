"""The CLI error boundary: one line, an exit code, nothing raw on the terminal."""

import os
import subprocess
import sys

import pytest

VIRT_DEBUG = [sys.executable, "-m", "virt_debug"]


def run(*args: str | bytes) -> subprocess.CompletedProcess:
    return subprocess.run([*VIRT_DEBUG, *args], capture_output=True, timeout=120)


def test_error_naming_a_hostile_file_name_prints_no_escape_sequence(tmp_path):
    name = os.fsencode(tmp_path) + b"/a\x1b[31mb\xff"
    result = run("analyze", name)

    assert result.returncode == 5
    assert result.stdout == b""
    lines = result.stderr.decode("utf-8", "replace").splitlines()
    assert len(lines) == 1 and lines[0].startswith("virt-debug: error: ")
    assert b"\x1b" not in result.stderr
    assert "\\x1b[31m" in lines[0]


@pytest.mark.parametrize(
    "args",
    [
        ["run", "nosuchdebugger", "dom"],
        ["analyze", "--format", "pdf", "x"],
        ["kubevirt", "run", "strace", "vm", "--duration", "5x"],
    ],
)
def test_usage_errors_are_one_line_without_traceback(args):
    result = run(*args)

    assert result.returncode != 0
    assert b"Traceback" not in result.stderr
    assert result.stderr.strip(), "the user must be told what went wrong"


def test_kubectl_plugin_shows_the_kubevirt_commands_at_top_level():
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from virt_debug.cli.main import kubectl_plugin; kubectl_plugin()",
            "--help",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0
    assert "Usage: kubectl virt-debug [OPTIONS] COMMAND" in result.stdout
    for command in ("run", "setup", "attach", "fetch", "detach", "status"):
        assert f"  {command} " in result.stdout
