"""Shared fixtures: a private libvirt daemon in session mode, as virt-launcher runs it.

The daemon runs as uid 107 (``setpriv``) when the suite runs as root, else as the
current user, with its own XDG directories and HOME under a temporary base directory and
virt-launcher's qemu.conf settings. The CLI under test runs as that uid too, with the
same environment, reaching the daemon as ``qemu:///session``. The test process itself
talks to the daemon through the socket path (``SessionDaemon.direct_uri``).
"""

import os
import shutil
import signal
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from virt_debug.backends.libvirt.daemon import SessionDaemon, default_uid

NEEDED_PROGRAMS = ("libvirtd", "qemu-system-x86_64", "strace", "virsh")


def _missing_programs() -> list[str]:
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [p for p in NEEDED_PROGRAMS if shutil.which(p, path=path) is None]
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        missing.append("setpriv")
    return missing


def chown_tree(path: Path, uid: int, gid: int) -> None:
    if os.geteuid() != 0:
        return
    for p in [path, *path.rglob("*")]:
        os.lchown(p, uid, gid)


@dataclass
class LocalLibvirt:
    """The private daemon, and how to run things as its user."""

    daemon: SessionDaemon
    python: list[str]
    env: dict[str, str]

    @property
    def uid(self) -> int:
        return self.daemon.uid

    def connect(self):
        import libvirt

        libvirt.registerErrorHandler(lambda _c, _e: None, None)
        return libvirt.open(self.daemon.direct_uri)

    def argv(self, args: Sequence[str]) -> list[str]:
        return self.daemon.as_user([*self.python, "-m", "virt_debug", *args])

    def virt_debug(
        self, args: Sequence[str], *, cwd: Path, timeout: float = 240
    ) -> subprocess.CompletedProcess:
        """Run the CLI as the daemon's user; returns stdout and stderr as text."""
        return subprocess.run(
            self.argv(args),
            env=self.env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start_virt_debug(self, args: Sequence[str], *, cwd: Path) -> subprocess.Popen:
        return subprocess.Popen(
            self.argv(args),
            env=self.env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def virsh(self, *args: str) -> subprocess.CompletedProcess:
        argv = self.daemon.as_user(["virsh", "-c", self.daemon.uri, *args])
        return subprocess.run(
            argv, env=self.daemon.env(), capture_output=True, text=True, timeout=120
        )

    def workdir(self, name: str) -> Path:
        """A fresh directory the daemon's user owns (guests, outputs)."""
        path = self.daemon.base / "tests" / name
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        chown_tree(self.daemon.base / "tests", self.uid, self.daemon.gid)
        return path

    def define(self, xml: str):
        conn = self.connect()
        try:
            return conn.defineXML(xml).name()
        finally:
            conn.close()

    def inactive_xml(self, name: str) -> str:
        import libvirt

        conn = self.connect()
        try:
            flags = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
            return conn.lookupByName(name).XMLDesc(flags)
        finally:
            conn.close()

    def domain_names(self) -> set[str]:
        conn = self.connect()
        try:
            return {d.name() for d in conn.listAllDomains()}
        finally:
            conn.close()

    def undefine(self, name: str) -> None:
        import libvirt

        conn = self.connect()
        try:
            dom = conn.lookupByName(name)
            if dom.isActive():
                dom.destroy()
            dom.undefine()
        except libvirt.libvirtError:
            pass
        finally:
            conn.close()


@pytest.fixture(scope="session")
def local_libvirt() -> Iterator[LocalLibvirt]:
    missing = _missing_programs()
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (run scripts/setup.sh)")

    # Not under pytest's own tmp dir: that one is private to root (0700), and every
    # path QEMU touches must be reachable by uid 107.
    base = Path(tempfile.mkdtemp(prefix="virt-debug-test-", dir="/tmp"))
    base.chmod(0o755)
    daemon = SessionDaemon(base, uid=default_uid())
    daemon.start()
    try:
        python, env = daemon.python()
        yield LocalLibvirt(daemon, python, env)
    finally:
        daemon.stop()
        survivors = daemon.qemu_processes()
        for pid in survivors:
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)
        assert not survivors, f"QEMU processes survived the test daemon: {survivors}"


@pytest.fixture
def guest_xml(local_libvirt):
    """Make a demo-style guest that halts (runs until stopped); returns its XML."""
    return lambda *args, **kwargs: _guest_xml(local_libvirt, *args, **kwargs)


def _guest_xml(
    local: LocalLibvirt, directory: Path, name: str, *, broken=False, smbios=""
) -> str:
    from virt_debug.demo.guest import create_guest

    # KVM when the daemon's user (not this root process) can open it, else TCG.
    probe = local.daemon.as_user(["sh", "-c", "test -r /dev/kvm && test -w /dev/kvm"])
    accel = "kvm" if subprocess.run(probe).returncode == 0 else "tcg"
    guest = create_guest(
        directory, name=name, broken=broken, power_off=False, accel=accel
    )
    chown_tree(directory, local.uid, local.daemon.gid)
    root = ET.fromstring(guest.xml_path.read_text())
    if smbios:
        sysinfo = ET.Element("sysinfo", type="smbios")
        entry = ET.SubElement(ET.SubElement(sysinfo, "system"), "entry")
        entry.set("name", "manufacturer")
        entry.text = smbios
        root.insert(3, sysinfo)
        ET.SubElement(root.find("os"), "smbios", mode="sysinfo")
    return ET.tostring(root, encoding="unicode")
