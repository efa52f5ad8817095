"""Archives a compromised pod could send back: header bombs, and entries that would
replace what is already in the user's directory. The pod side writes to the PVC,
which QEMU (and so a guest that took QEMU over) can write too."""

from __future__ import annotations

import subprocess
import tarfile
import zlib
from pathlib import Path

import pytest

from virt_debug.errors import TraceInputError
from virt_debug.launch import transfer as t

PY39 = "/root/.pyenv/versions/3.9.18/bin/python3.9"


def header_bomb(kind: bytes, size: int = 8 << 20):
    """A gzip stream of a pax or GNU long-name header of ``size`` bytes: tiny on
    the wire, read whole into memory by tarfile."""
    gzip = zlib.compressobj(6, zlib.DEFLATED, 31)
    info = tarfile.TarInfo("././@LongLink")
    info.type, info.size = kind, size
    yield gzip.compress(info.tobuf(tarfile.USTAR_FORMAT))
    block = b"a=" + b"b" * ((1 << 20) - 2)
    for _ in range(size >> 20):
        yield gzip.compress(block)
    yield gzip.flush()


KINDS = {"pax": tarfile.XHDTYPE, "gnu long name": tarfile.GNUTYPE_LONGNAME}


@pytest.mark.parametrize("kind", KINDS)
def test_local_end_refuses_a_header_bomb(tmp_path, kind):
    with pytest.raises(TraceInputError, match="extended header of 8388608 bytes"):
        t.unpack_stream(header_bomb(KINDS[kind]), tmp_path / "dest")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not Path(PY39).exists(), reason="no python3.9 here")
@pytest.mark.parametrize("kind", KINDS)
def test_pod_end_refuses_a_header_bomb(tmp_path, kind):
    result = subprocess.run(
        t.upload_command(str(tmp_path / "dest"), python=PY39),
        input=b"".join(header_bomb(KINDS[kind])),
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "extended header of 8388608 bytes" in t.refusal(result.stderr.decode())


def pod_outputs(root: Path) -> Path:
    """What the pod would send: a launch, and a hostile top-level ``.ssh``."""
    (root / "20261203-101500-42").mkdir(parents=True)
    (root / "20261203-101500-42" / "strace.log").write_text("execve(...) = 0\n")
    (root / ".ssh").mkdir()
    (root / ".ssh" / "authorized_keys").write_text("ssh-ed25519 AAAA intruder\n")
    return root


def test_a_fetch_never_replaces_what_is_in_the_users_directory(tmp_path):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "authorized_keys").write_text("mine\n")
    archive = t.pack_directory(pod_outputs(tmp_path / "pod"))

    with pytest.raises(TraceInputError, match="'.ssh' is already in"):
        t.unpack_stream(archive, home)

    assert (home / ".ssh" / "authorized_keys").read_text() == "mine\n"
    assert sorted(p.name for p in home.iterdir()) == [".ssh"]


def test_a_fetch_into_a_new_or_empty_directory_still_works(tmp_path):
    source = pod_outputs(tmp_path / "pod")
    (tmp_path / "empty").mkdir()
    for dest in (tmp_path / "new", tmp_path / "empty"):
        summary = t.unpack_stream(t.pack_directory(source), dest)
        assert summary.files == 4
        assert (dest / "20261203-101500-42" / "strace.log").exists()
