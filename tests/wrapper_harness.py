"""Running the emulator wrapper the way libvirt does, as QEMU's user (uid 107 as root).

Used by tests/test_wrapper_*.py and tests/test_debuggers_*.py: a short work directory
owned by that uid (QMP socket paths must stay under 108 bytes), the shells to run the
wrapper under, a small QMP client, and QEMU's pid found from /proc.
"""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from virt_debug.launch.wrapper import render_wrapper

QEMU = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"
QEMU_UID = 107
SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"
# KVM when QEMU's user can open it, else TCG: QEMU picks.
ACCEL = "kvm:tcg"

_CANDIDATE_SHELLS = {
    "dash": ["/bin/dash"],
    "bash": ["/bin/bash"],
    "busybox": ["/bin/busybox", "sh"],
}
SHELLS = {n: a for n, a in _CANDIDATE_SHELLS.items() if os.path.exists(a[0])}


def run_uid() -> int:
    return QEMU_UID if os.geteuid() == 0 else os.geteuid()


def as_qemu_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return [
        SETPRIV,
        f"--reuid={QEMU_UID}",
        f"--regid={QEMU_UID}",
        "--init-groups",
        "--",
        *argv,
    ]


def real_args(
    sock: Path, name: str = "t", machine: str = "q35", accel: str = ACCEL
) -> list[str]:
    """A libvirt-like real launch: named, no defaults, monitor on a socket."""
    return [
        "-name",
        f"guest={name},debug-threads=on",
        "-machine",
        f"{machine},accel={accel}",
        "-m",
        "32",
        "-display",
        "none",
        "-nodefaults",
        "-qmp",
        f"unix:{sock},server=on,wait=off",
    ]


@dataclass
class Workspace:
    root: Path

    @property
    def out(self) -> Path:
        return self.root / "out"

    def chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            os.lchown(path, run_uid(), run_uid())

    def write_wrapper(self, debugger: str = "strace", name: str = "", **kw) -> Path:
        path = self.root / f"wrapper-{debugger}{name}"
        kw.setdefault("qemu", QEMU)
        kw.setdefault("output", str(self.out))
        path.write_text(render_wrapper(debugger, **kw))
        path.chmod(0o755)
        return path

    def start(
        self,
        shell: list[str],
        wrapper: Path,
        args: list[str],
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen:
        """The wrapper as libvirt starts it: its own pid, stdin /dev/null."""
        stderr = open(self.root / "stderr.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            as_qemu_user([*shell, str(wrapper), *args]),
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            env=env if env is not None else {"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
            cwd=self.root,
        )
        stderr.close()
        return proc

    def stderr(self) -> str:
        path = self.root / "stderr.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def launch_dirs(self) -> list[Path]:
        if not self.out.exists():
            return []
        return sorted(p for p in self.out.iterdir() if p.is_dir())


def make_workspace() -> Workspace:
    root = Path(tempfile.mkdtemp(prefix="vdw-", dir="/tmp"))
    root.chmod(0o755)
    work = Workspace(root)
    work.chown(root)
    return work


def remove_workspace(work: Workspace) -> None:
    shutil.rmtree(work.root, ignore_errors=True)


class QMP:
    """Just enough of QEMU's monitor protocol to query and quit."""

    def __init__(self, path: Path, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.sock.settimeout(timeout)
        self.reader = self.sock.makefile("rb")
        self.greeting = json.loads(self.reader.readline())
        self.command("qmp_capabilities")

    def command(self, execute: str, **arguments: object) -> object:
        message: dict[str, object] = {"execute": execute}
        if arguments:
            message["arguments"] = arguments
        self.sock.sendall(json.dumps(message).encode())
        while True:
            line = self.reader.readline()
            if not line:
                raise EOFError("QEMU closed its monitor")
            reply = json.loads(line)
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise RuntimeError(reply["error"])

    def quit(self) -> None:
        try:
            self.command("quit")
        except EOFError:
            pass
        self.close()

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def qemu_pids(marker: str) -> list[int]:
    """Live QEMU processes (by executable, not a debugger) whose argv holds marker."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            exe = os.readlink(entry / "exe")
            argv = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if "qemu-system" in exe and marker.encode() in argv and state != "Z":
            found.append(int(entry.name))
    return found


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """The pids still alive (not zombies) after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for pid in pids:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if state[0] != "Z":
                alive.append(pid)
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


def trace_pids(log: Path) -> set[str]:
    """The distinct thread ids at the start of strace -f lines."""
    pids = set()
    for line in log.read_text(errors="replace").splitlines():
        head = line.split(" ", 1)[0]
        pid = head.split("<", 1)[0]
        if pid.isdigit():
            pids.add(pid)
    return pids
