"""Tar over exec, run for real: the helper pod's command as a local process under
python3.9 (the sidecar-shim image's python) on one end, our local side on the other."""

import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from virt_debug.errors import TraceInputError, UsageError
from virt_debug.launch import transfer as t

PY39 = "/root/.pyenv/versions/3.9.18/bin/python3.9"
needs_py39 = pytest.mark.skipif(
    not os.access(PY39, os.X_OK),
    reason=f"{PY39} is absent: the helper's python3.9 claim cannot be checked here",
)


def pod(argv: list[str], data: bytes = b"") -> subprocess.CompletedProcess:
    """Run a helper command the way the pod would: argv as is, stdin, stdout, stderr."""
    return subprocess.run(argv, input=data, capture_output=True, timeout=120)


def chunked(data: bytes, size: int = 4096):
    return (data[i : i + size] for i in range(0, len(data), size))


def tree(root: Path) -> dict[str, tuple]:
    """Every entry under root: kind, permission bits, content or link target."""
    found = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            found[name] = ("link", os.readlink(path))
        elif stat.S_ISDIR(info.st_mode):
            found[name] = ("dir",)
        else:
            found[name] = ("file", info.st_mode & 0o777, path.read_bytes())
    return found


@pytest.fixture
def outputs(tmp_path) -> Path:
    """An outputs directory as the wrapper leaves it: launches beside probes.log."""
    root = tmp_path / "outputs"
    for launch in ("20261203-101500-42", "20261203-101501-43", "20261203-101501-100-1"):
        (root / launch).mkdir(parents=True)
        (root / launch / "strace.log").write_text(f"{launch} execve(...) = 0\n" * 500)
        (root / launch / "argv").write_bytes(b"/usr/libexec/qemu-kvm\0-name\0guest=t\0")
        (root / launch / "status").write_text("exit 0\n")
    (root / "20261203-101501-43" / "cores").mkdir()
    (root / "20261203-101501-43" / "cores" / "core.1").write_bytes(os.urandom(70000))
    (root / "probes.log").write_text("probe by pid 7: -machine none\n")
    return root


# Upload: our archive into the pod.


@needs_py39
def test_upload_keeps_modes_links_and_reports_a_summary(tmp_path):
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "busybox").write_bytes(b"\x7fELF" + b"x" * 5000)
    (src / "bin" / "busybox").chmod(0o755)
    (src / "bin" / "sh").symlink_to("busybox")
    (src / "MANIFEST").write_text("m\n")
    wrapper = b"#!/var/run/virt-debug/tools/bin/sh\nexit 0\n"
    archive = b"".join(t.pack_directory(src, extra={"wrapper": (wrapper, 0o755)}))

    dest = tmp_path / "pvc" / "tools"
    result = pod(t.upload_command(str(dest), python=PY39), archive)

    assert result.returncode == 0, result.stderr
    assert t.parse_summary(result.stderr.decode()) == t.TransferSummary(
        5, 5004 + 2 + len(wrapper)
    )
    assert (dest / "bin" / "busybox").stat().st_mode & 0o777 == 0o755
    assert (dest / "wrapper").stat().st_mode & 0o777 == 0o755
    assert (dest / "wrapper").read_bytes() == wrapper
    assert os.readlink(dest / "bin" / "sh") == "busybox"
    assert (dest / "MANIFEST").stat().st_mode & 0o777 == 0o644
    assert (dest / ".virt-debug-transfer").read_text().startswith("files=5 ")
    assert not [p for p in dest.iterdir() if p.name.startswith(".incoming")]


@needs_py39
def test_a_second_upload_replaces_what_it_carries_and_keeps_the_rest(tmp_path):
    dest = tmp_path / "tools"
    (dest / "bin").mkdir(parents=True)
    (dest / "bin" / "old-tool").write_text("old")
    (dest / "outputs").mkdir()
    (dest / "outputs" / "probes.log").write_text("keep me")
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "strace").write_text("new")

    result = pod(
        t.upload_command(str(dest), python=PY39), b"".join(t.pack_directory(src))
    )

    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (dest / "bin").iterdir()) == ["strace"]
    assert (dest / "outputs" / "probes.log").read_text() == "keep me"


@needs_py39
def test_setuid_bits_are_dropped(tmp_path):
    archive = _tar(
        _file("bin/su", b"x", mode=0o4755), _file("bin/g", b"y", mode=0o2775)
    )

    result = pod(t.upload_command(str(tmp_path / "d"), python=PY39), archive)

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "d" / "bin" / "su").stat().st_mode & 0o7777 == 0o755
    assert (tmp_path / "d" / "bin" / "g").stat().st_mode & 0o7777 == 0o775


def test_the_helper_command_is_short_enough_for_an_exec_url():
    # Exec arguments travel in the request URL; proxies commonly cap it near 8-16 KiB.
    from urllib.parse import quote

    for argv in (t.upload_command("/var/run/virt-debug/tools"), t.fetch_command("/o")):
        assert argv[:2] == ["python3", "-c"]
        assert len(quote(argv[2])) < 10_000
        assert '"""' not in argv[2] and "#" not in argv[2]


# Fetch: the pod's outputs to us.


@needs_py39
def test_fetch_brings_nested_launches_back_intact(tmp_path, outputs):
    result = pod(t.fetch_command(str(outputs), python=PY39))
    assert result.returncode == 0, result.stderr

    local = tmp_path / "fetched"
    summary = t.unpack_stream(chunked(result.stdout), local)

    assert tree(local) == tree(outputs)
    assert summary == t.parse_summary(result.stderr.decode())
    assert summary.files == len(tree(outputs))


@needs_py39
def test_fetch_since_a_launch_sends_only_later_launches(tmp_path, outputs):
    result = pod(t.fetch_command(str(outputs), since="20261203-101500-42", python=PY39))
    assert result.returncode == 0, result.stderr

    local = tmp_path / "fetched"
    t.unpack_stream(chunked(result.stdout), local)

    top = sorted(p.name for p in local.iterdir())
    # pid 100 after pid 43 in the same second: compared as numbers, not text.
    assert top == ["20261203-101501-100-1", "20261203-101501-43", "probes.log"]


@needs_py39
def test_fetch_skips_links_that_leave_and_special_files_and_says_so(tmp_path, outputs):
    (outputs / "escape").symlink_to("/etc/passwd")
    os.mkfifo(outputs / "fifo")

    result = pod(t.fetch_command(str(outputs), python=PY39))

    assert result.returncode == 0, result.stderr
    assert b"skipped 'escape': symlink to '/etc/passwd'" in result.stderr
    assert b"skipped 'fifo': not a file" in result.stderr
    local = tmp_path / "fetched"
    t.unpack_stream(chunked(result.stdout), local)
    assert not (local / "escape").exists() and not (local / "fifo").exists()


@needs_py39
def test_fetch_of_a_missing_directory_fails_with_a_message(tmp_path):
    result = pod(t.fetch_command(str(tmp_path / "nope"), python=PY39))

    assert result.returncode == 1
    assert (
        t.refusal(result.stderr.decode()) == f"{tmp_path / 'nope'} is not a directory"
    )
    assert result.stdout == b""


@pytest.mark.parametrize("size", [1, 7, 4096, 1 << 30], ids=lambda n: f"chunks of {n}")
def test_local_pack_and_unpack_round_trip(tmp_path, outputs, size):
    local = tmp_path / "copy"
    archive = b"".join(t.pack_directory(outputs))

    summary = t.unpack_stream(chunked(archive, size), local)

    assert tree(local) == tree(outputs)
    assert summary.files == len(tree(outputs))


def test_pack_of_a_missing_directory_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="not a directory"):
        t.pack_directory(tmp_path / "nope")


# Hostile archives: refused on both ends, nothing written anywhere.


def _file(name, data=b"x", mode=0o644, **fields):
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


def _tar(*members, gz: bool = True) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gz else "w") as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def _lying_size(name: str, size: int) -> bytes:
    # A header that claims a huge member, with no data behind it.
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(tarfile.GNU_FORMAT)


HOSTILE = {
    "absolute path": (_tar(_file("/tmp/virt-debug-evil")), "absolute path"),
    "dot-dot": (_tar(_file("ok"), _file("../evil")), "'..' in path"),
    "nested dot-dot": (_tar(_file("a/../../evil")), "'..' in path"),
    "absolute symlink": (
        _tar(_file("etc", type=tarfile.SYMTYPE, linkname="/etc", size=0)),
        "symlink to '/etc' leaves the destination",
    ),
    "symlink up": (
        _tar(_file("up", type=tarfile.SYMTYPE, linkname="../..", size=0)),
        "leaves the destination",
    ),
    "write through an inside symlink": (
        _tar(
            _file("sub/a"),
            _file("via", type=tarfile.SYMTYPE, linkname="sub", size=0),
            _file("via/b"),
        ),
        "a parent is not a directory",
    ),
    "hard link": (
        _tar(_file("h", type=tarfile.LNKTYPE, linkname="/etc/passwd", size=0)),
        "not a file, directory or symlink",
    ),
    "device": (
        _tar(_file("mem", type=tarfile.CHRTYPE, devmajor=1, devminor=1, size=0)),
        "not a file, directory or symlink",
    ),
    "absurd size": (_lying_size("huge", 1 << 44), "bytes is over the limit"),
    "over the total": (
        _tar(_file("a", b"x" * 600_000), _file("b", b"y" * 600_000)),
        "'b': 600000 bytes is over the limit of 1000000",
    ),
    "truncated": (
        _tar(_file("big", os.urandom(200_000)))[:50_000],
        "archive truncated or corrupt",
    ),
    "not an archive": (b"hello, this is not a tar stream\n" * 20, "not a tar archive"),
}


@pytest.fixture
def area(tmp_path) -> Path:
    """A destination with content, in an area whose other content must not change."""
    dest = tmp_path / "area" / "dest"
    (dest / "bin").mkdir(parents=True)
    (dest / "bin" / "strace").write_text("the previous upload")
    return dest


def _unchanged(area: Path) -> None:
    assert tree(area.parent) == {
        "dest": ("dir",),
        "dest/bin": ("dir",),
        "dest/bin/strace": ("file", 0o644, b"the previous upload"),
    }
    assert not Path("/tmp/virt-debug-evil").exists()


@needs_py39
@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_pod_end_refuses_hostile_archives(case, area):
    archive, reason = HOSTILE[case]

    result = pod(t.upload_command(str(area), python=PY39, max_bytes=1_000_000), archive)

    assert result.returncode == 1
    message = result.stderr.decode().strip().splitlines()[-1]
    assert message.startswith("virt-debug-transfer: refused: ")
    assert message.endswith("; nothing was changed")
    assert reason in message
    _unchanged(area)


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_local_end_refuses_hostile_archives(case, area):
    archive, reason = HOSTILE[case]

    with pytest.raises(TraceInputError, match="nothing was written") as raised:
        t.unpack_stream(chunked(archive), area, max_bytes=1_000_000)

    assert reason in str(raised.value)
    _unchanged(area)


def test_a_refused_fetch_into_a_new_directory_leaves_no_directory(tmp_path):
    archive, _ = HOSTILE["dot-dot"]

    with pytest.raises(TraceInputError):
        t.unpack_stream([archive], tmp_path / "new")

    assert list(tmp_path.iterdir()) == []


def test_helper_commands_fit_in_an_8k_exec_url():
    # Exec arguments travel as query parameters; proxies may cap a URL at 8 KiB.
    from urllib.parse import quote

    from virt_debug.launch.transfer import fetch_command, upload_command

    for argv in (upload_command("/var/run/virt-debug"), fetch_command("/x", "a")):
        query = "&".join("command=" + quote(arg, safe="") for arg in argv)
        assert len(query) < 8192 - 512, len(query)
