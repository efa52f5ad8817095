"""``virt-debug wrapper-script`` / ``hook-script`` and what render_wrapper writes."""

import os
import subprocess
import sys

import pytest

from virt_debug.launch.wrapper import render_wrapper
from wrapper_harness import QEMU, SHELLS, make_workspace, remove_workspace


def virt_debug(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "virt_debug", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture()
def work():
    work = make_workspace()
    yield work
    remove_workspace(work)


def test_wrapper_script_command_prints_a_posix_script():
    result = virt_debug("wrapper-script", "strace", "--qemu", "/usr/libexec/qemu-kvm")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith("#!/bin/sh\n")
    assert "QEMU=/usr/libexec/qemu-kvm\n" in text
    assert "--seccomp-bpf" in text and "LD_LIBRARY_PATH" in text
    for shell in SHELLS.values():
        check = subprocess.run([*shell, "-n"], input=text, text=True)
        assert check.returncode == 0, f"{shell} cannot parse the wrapper"


def test_full_and_tool_dir_options():
    result = virt_debug(
        "wrapper-script",
        "--full",
        "--tool-dir",
        "/var/run/virt-debug/tools",
        "--shell",
        "/var/run/virt-debug/tools/bin/sh",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("#!/var/run/virt-debug/tools/bin/sh\n")
    assert "--seccomp-bpf" not in result.stdout
    assert "TOOLS=/var/run/virt-debug/tools\n" in result.stdout


def test_relative_paths_are_a_one_line_error():
    result = virt_debug("wrapper-script", "--output", "traces")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("virt-debug: error: the output path must be")
    assert result.stderr.count("\n") == 1


def test_hook_script_command(tmp_path):
    result = virt_debug("hook-script", "--emulator", "/opt/w")
    assert result.returncode == 0
    script = tmp_path / "onDefineDomain"
    script.write_text(result.stdout)
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            "--vmi",
            "{}",
            "--domain",
            "<domain><devices/></domain>",
        ],
        capture_output=True,
        text=True,
    )
    assert (
        done.stdout == "<domain><devices><emulator>/opt/w</emulator></devices></domain>"
    )


def test_help_teaches_with_examples():
    for command in ("wrapper-script", "hook-script"):
        result = virt_debug(command, "--help")
        assert result.returncode == 0 and "Examples:" in result.stdout


@pytest.mark.libvirt
@pytest.mark.skipif(not os.path.exists(QEMU), reason="qemu-system-x86_64 missing")
def test_paths_with_quotes_and_spaces_and_extra_debugger_args(work):
    odd = work.root / "it's a dir"
    odd.mkdir()
    qemu = odd / "qemu $x"
    qemu.symlink_to(QEMU)
    out = odd / "out put"
    wrapper = work.root / "wrapper"
    wrapper.write_text(
        render_wrapper(
            "strace",
            qemu=str(qemu),
            output=str(out),
            extra_args=["-e", "signal=none"],
        )
    )
    wrapper.chmod(0o755)
    for path in (odd, qemu):
        work.chown(path)
    proc = work.start(SHELLS["dash"], wrapper, ["-name", "guest=t", "-version"])
    assert proc.wait(60) == 0, work.stderr()
    (launch,) = [p for p in out.iterdir() if p.is_dir()]
    assert (launch / "argv").read_bytes().split(b"\0")[0] == str(qemu).encode()
    assert (launch / "status").read_text() == "exit 0\n"
    assert (launch / "stderr").exists()
    assert "QEMU emulator version" in work.stderr()


@pytest.mark.skipif(not os.path.exists(QEMU), reason="qemu-system-x86_64 missing")
def test_missing_debugger_is_a_clear_failure(work):
    wrapper = work.write_wrapper("strace", tool_dir=str(work.root / "no-tools"))
    proc = work.start(SHELLS["dash"], wrapper, ["-name", "guest=t", "-version"])
    assert proc.wait(60) == 1
    assert "the debugger" in work.stderr() and "is not installed here" in work.stderr()
