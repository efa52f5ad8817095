"""`virt-debug bundle` as a user runs it."""

import os
import shutil
import subprocess
import sys
import tarfile

import pytest

pytestmark = pytest.mark.skipif(
    not shutil.which("strace") or not os.path.exists("/bin/busybox"),
    reason="needs strace and busybox-static installed (scripts/setup.sh installs them)",
)


def virt_debug(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "virt_debug", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
    )


def test_bundle_into_a_directory_and_into_an_archive(tmp_path):
    result = virt_debug("bundle", str(tmp_path / "tools"))
    assert result.returncode == 0, result.stderr
    assert "strace bundle in" in result.stderr
    assert (tmp_path / "tools" / "bin" / "strace").exists()

    result = virt_debug("bundle", str(tmp_path / "tools.tar.gz"))
    assert result.returncode == 0, result.stderr
    with tarfile.open(tmp_path / "tools.tar.gz") as archive:
        names = archive.getnames()
    assert {"bin/strace", "bin/sh", "lib/libc.so.6", "MANIFEST"} <= set(names)


def test_a_foreign_directory_is_refused_in_one_line(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes").write_text("keep")

    result = virt_debug("bundle", str(tmp_path / "mine"))

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"virt-debug: error: {tmp_path / 'mine'} exists and is not a bundle; "
        "choose a new directory"
    ]
    assert (tmp_path / "mine" / "notes").read_text() == "keep"
