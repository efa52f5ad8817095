"""The portable bundle built from this machine's packages: complete, checkable, and
runnable with an empty environment through its own loader."""

import hashlib
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from virt_debug.errors import UsageError
from virt_debug.launch import bundle as b
from virt_debug.launch.elf import read_elf

pytestmark = pytest.mark.skipif(
    not shutil.which("strace") or not os.path.exists("/bin/busybox"),
    reason="needs strace and busybox-static installed (scripts/setup.sh installs them)",
)


@pytest.fixture(scope="module")
def strace_bundle(tmp_path_factory) -> Path:
    return b.build_bundle(tmp_path_factory.mktemp("b") / "tools")


def test_layout_has_the_binary_its_libraries_the_loader_and_a_static_shell(
    strace_bundle,
):
    files = {str(p.relative_to(strace_bundle)) for p in strace_bundle.rglob("*")}

    assert {"bin/strace", "bin/busybox", "bin/sh", "VERSION", "MANIFEST"} <= files
    assert f"lib/{b.loader_name(os.uname().machine)}" in files
    assert {"lib/libc.so.6", "lib/libunwind-ptrace.so.0", "lib/liblzma.so.5"} <= files
    assert os.readlink(strace_bundle / "bin" / "sh") == "busybox"
    assert read_elf(strace_bundle / "bin" / "busybox").static
    assert os.access(strace_bundle / "bin" / "strace", os.X_OK)


def test_manifest_hashes_sizes_and_packages_match_the_files(strace_bundle):
    lines = [
        line.split()
        for line in (strace_bundle / "MANIFEST").read_text().splitlines()
        if not line.startswith("#")
    ]

    assert len(lines) >= 8
    for digest, size, mode, path, source, _package in lines:
        data = (strace_bundle / path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest
        assert int(size) == len(data)
        assert (strace_bundle / path).stat().st_mode & 0o777 == int(mode, 8)
        assert Path(source).is_absolute()
    packages = {line[3]: line[5] for line in lines}
    assert packages["bin/strace"].startswith("strace=")
    assert packages["bin/busybox"].startswith("busybox-static=")
    assert packages["lib/libc.so.6"].startswith("libc6")


def test_sha256sums_check_with_the_bundled_busybox(strace_bundle):
    result = subprocess.run(
        ["bin/busybox", "sha256sum", "-c", "SHA256SUMS"],
        cwd=strace_bundle,
        capture_output=True,
        text=True,
        env={},
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "bin/strace: OK" in result.stdout


def test_version_names_debugger_loader_and_machine(strace_bundle):
    version = b.read_version(strace_bundle)

    assert version["debugger"] == "strace"
    assert version["debugger-version"].startswith("strace -- version ")
    assert version["loader"] == f"lib/{b.loader_name(os.uname().machine)}"
    assert version["shell"] == "bin/sh"


def test_bundled_strace_runs_with_no_environment_and_traces_a_child(
    strace_bundle, tmp_path
):
    # The tracee runs with its own loader: the bundle's applies to strace alone.
    argv = b.debugger_argv(str(strace_bundle))
    result = subprocess.run(
        [*argv, "-f", "-e", "trace=execve,openat", "/bin/true"],
        capture_output=True,
        text=True,
        env={},
    )

    assert result.returncode == 0, result.stderr
    assert 'execve("/bin/true"' in result.stderr
    child_opens = [line for line in result.stderr.splitlines() if "openat(" in line]
    assert any("/libc.so.6" in line for line in child_opens)
    assert not any(str(strace_bundle) in line for line in child_opens)


def test_gdbserver_bundle_runs_too(tmp_path):
    if not shutil.which("gdbserver"):
        pytest.skip("gdbserver is not installed")

    tools = b.build_bundle(tmp_path / "gdb", "gdbserver")

    result = subprocess.run(
        [*b.debugger_argv(str(tools), "gdbserver"), "--version"],
        capture_output=True,
        text=True,
        env={},
    )
    assert result.returncode == 0 and "gdbserver" in result.stdout
    assert (tools / "lib" / "libstdc++.so.6").exists()


def test_rebuilding_replaces_a_bundle_but_never_a_foreign_directory(tmp_path):
    tools = b.build_bundle(tmp_path / "tools")
    (tools / "stale").write_text("from an older bundle")

    b.build_bundle(tmp_path / "tools")
    assert not (tools / "stale").exists()

    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not a bundle"):
        b.build_bundle(foreign)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_unknown_debugger_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="choose one of gdbserver, strace"):
        b.build_bundle(tmp_path / "x", "valgrind")
    assert not (tmp_path / "x").exists()


def _elf(machine: int, interpreter: bytes | None) -> bytes:
    """A minimal 64-bit little-endian ELF header with zero or one PT_INTERP."""
    phnum = 1 if interpreter else 0
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header = ident + struct.pack(
        "<HHIQQQIHHHHHH", 2, machine, 1, 0, 64, 0, 0, 64, 56, phnum, 0, 0, 0
    )
    if not interpreter:
        return header
    offset = 64 + 56
    phdr = struct.pack(
        "<IIQQQQQQ", 3, 4, offset, 0, 0, len(interpreter), len(interpreter), 1
    )
    return header + phdr + interpreter


def test_arm64_binaries_get_the_arm64_loader_name(tmp_path):
    binary = tmp_path / "strace-arm64"
    binary.write_bytes(_elf(183, b"/lib/ld-linux-aarch64.so.1\0"))
    static = tmp_path / "busybox-arm64"
    static.write_bytes(_elf(183, None))

    info = read_elf(binary)

    assert (info.machine, info.interpreter) == ("aarch64", "/lib/ld-linux-aarch64.so.1")
    assert read_elf(static).static
    assert b.loader_name(info.machine) == "ld-linux-aarch64.so.1"
    assert b.debugger_argv("/t", machine="aarch64")[0] == "/t/lib/ld-linux-aarch64.so.1"


def test_a_non_elf_file_is_refused(tmp_path):
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")

    with pytest.raises(UsageError, match="not an ELF executable"):
        read_elf(script)
