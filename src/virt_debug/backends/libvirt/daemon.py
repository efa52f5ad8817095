"""A private libvirt daemon in session mode, set up the way virt-launcher runs its own.

virt-launcher runs libvirt as uid 107 in session mode (``qemu:///session``) with
``namespaces = [ ]`` and ``cgroup_controllers = [ ]`` in qemu.conf. A private daemon
like that gives local runs, the demo and the tests the same conditions without touching
the machine's own libvirt: every path it uses (configuration, cache, runtime sockets,
home) lives under one base directory owned by that uid, and clients reach it through
the same environment. When we run as root the daemon and its clients run as uid 107
through ``setpriv``; otherwise as the current user.
"""

import logging
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from virt_debug.errors import LibvirtError, UsageError

log = logging.getLogger(__name__)

QEMU_UID = 107
SESSION_URI = "qemu:///session"

QEMU_CONF = """\
# Written by virt-debug: the qemu.conf settings virt-launcher's libvirt runs with.
namespaces = [ ]
cgroup_controllers = [ ]
# QEMU's stdout and stderr go straight into the domain log file, so this session
# needs no virtlogd of its own.
stdio_handler = "file"
"""


def _user_of(uid: int) -> tuple[int, str]:
    try:
        entry = pwd.getpwuid(uid)
    except KeyError as e:
        raise UsageError(
            f"there is no user with uid {uid}",
            hint="run scripts/setup.sh as root: it creates the qemu user (uid 107)",
        ) from e
    return entry.pw_gid, entry.pw_name


def default_uid() -> int:
    """uid 107 (virt-launcher's qemu user) when we are root, else ourselves."""
    return QEMU_UID if os.geteuid() == 0 else os.geteuid()


@dataclass
class SessionDaemon:
    """libvirtd in session mode for one uid, with all its state under ``base``."""

    base: Path
    uid: int = field(default_factory=default_uid)
    process: subprocess.Popen | None = None

    @property
    def gid(self) -> int:
        return _user_of(self.uid)[0]

    @property
    def socket(self) -> Path:
        # virtqemud (modular daemons) listens on its own socket; libvirtd on the
        # classic one.
        runtime = self.base / "runtime" / "libvirt"
        modular = runtime / "virtqemud-sock"
        return modular if modular.exists() else runtime / "libvirt-sock"

    @property
    def uri(self) -> str:
        """The URI a client running with ``env()`` uses, as virt-launcher does."""
        return SESSION_URI

    @property
    def direct_uri(self) -> str:
        """A URI any local process may use (root, for one), naming the socket."""
        return f"qemu+unix:///session?socket={self.socket}"

    @property
    def log_dir(self) -> Path:
        return self.base / "cache" / "libvirt" / "qemu" / "log"

    def env(self, base_env: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of the daemon and of its clients."""
        env = dict(os.environ if base_env is None else base_env)
        env.update(
            HOME=str(self.base / "home"),
            XDG_CONFIG_HOME=str(self.base / "config"),
            XDG_CACHE_HOME=str(self.base / "cache"),
            XDG_RUNTIME_DIR=str(self.base / "runtime"),
            # A client must never spawn a daemon of its own behind our back.
            LIBVIRT_AUTOSTART="0",
        )
        return env

    def as_user(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run as the daemon's uid (through setpriv when we are root)."""
        if os.geteuid() == self.uid:
            return list(argv)
        if os.geteuid() != 0:
            raise UsageError(
                f"only root can run commands as uid {self.uid}",
                hint="run as root, or use a daemon of your own uid",
            )
        return [
            "setpriv",
            f"--reuid={self.uid}",
            f"--regid={self.gid}",
            "--init-groups",
            "--",
            *argv,
        ]

    def prepare(self) -> None:
        """Create the base directory tree and qemu.conf, owned by the daemon's uid."""
        for name in ("config/libvirt", "cache", "runtime", "home"):
            (self.base / name).mkdir(parents=True, exist_ok=True)
        (self.base / "runtime").chmod(0o700)
        (self.base / "config" / "libvirt" / "qemu.conf").write_text(QEMU_CONF)
        if os.geteuid() == 0:
            for path in [self.base, *self.base.rglob("*")]:
                os.lchown(path, self.uid, self.gid)

    def reachable(self) -> bool:
        """Whether a daemon answers on this base directory's socket."""
        import libvirt

        if not self.socket.exists():
            return False
        try:
            conn = libvirt.open(self.direct_uri)
        except libvirt.libvirtError:
            return False
        conn.close()
        return True

    def start(self, *, idle_exit: int = 0, timeout: float = 30.0) -> None:
        """Start libvirtd; ``idle_exit`` seconds without clients or guests stop it
        (0: never). Returns once it answers."""
        daemon = shutil.which("virtqemud", path="/usr/sbin:/usr/bin") or shutil.which(
            "libvirtd", path="/usr/sbin:/usr/bin"
        )
        if daemon is None:
            raise LibvirtError(
                "no libvirt daemon (virtqemud or libvirtd) is installed",
                hint="run scripts/setup.sh as root, or apt-get install libvirt-daemon",
            )
        self.prepare()

        log_file = open(self.base / "daemon.log", "ab")  # noqa: SIM115
        argv = self.as_user([daemon, "--timeout", str(idle_exit)])
        log.info("starting %s as uid %d under %s", daemon, self.uid, self.base)
        # A session of its own: Ctrl-C at the terminal must not kill the daemon
        # before we have restored the domains it holds.
        self.process = subprocess.Popen(
            argv,
            env=self.env(),
            cwd=self.base,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )
        log_file.close()

        deadline = time.monotonic() + timeout
        while not self.reachable():
            if self.process.poll() is not None:
                raise LibvirtError(
                    f"the private libvirt daemon exited at once "
                    f"(status {self.process.returncode})",
                    hint=f"see {self.base / 'daemon.log'}",
                )
            if time.monotonic() > deadline:
                self.stop()
                raise LibvirtError(
                    f"the private libvirt daemon did not answer within {timeout:.0f} s",
                    hint=f"see {self.base / 'daemon.log'}",
                )
            time.sleep(0.1)

    def destroy_guests(self) -> list[str]:
        """Destroy every running guest of this daemon; return their names."""
        import libvirt

        if not self.reachable():
            return []
        conn = libvirt.open(self.direct_uri)
        names = []
        try:
            for domain in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                names.append(domain.name())
                try:
                    domain.destroy()
                except libvirt.libvirtError as e:
                    log.warning("cannot destroy leftover guest %s: %s", names[-1], e)
        finally:
            conn.close()
        return names

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the daemon we started (after destroying its guests)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.destroy_guests()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("libvirtd pid %d ignored SIGTERM; killing it", self.process.pid)
            self.process.kill()
            self.process.wait(timeout)

    def python(self) -> tuple[list[str], dict[str, str]]:
        """A Python command line (and environment) that runs virt-debug as this uid.

        This interpreter if that user can run it; else the system's python3 with our
        import path, when it is the same Python version.
        """
        env = self.env()
        candidates = [(sys.executable, env)]
        system = "/usr/bin/python3"
        if os.path.exists(system) and system != sys.executable:
            ours = [
                p
                for p in sys.path
                if p.endswith("site-packages") or os.path.isdir(f"{p}/virt_debug")
            ]
            candidates.append((system, {**env, "PYTHONPATH": os.pathsep.join(ours)}))
        for executable, candidate_env in candidates:
            argv = self.as_user([executable, "-c", "import virt_debug, libvirt"])
            done = subprocess.run(argv, env=candidate_env, capture_output=True)
            if done.returncode == 0:
                return [executable], candidate_env
        raise UsageError(
            f"uid {self.uid} cannot run Python with virt-debug and libvirt-python",
            hint="put the checkout and its .venv where that user can read them, "
            "e.g. under /opt or /srv",
        )

    def qemu_processes(self) -> list[int]:
        """Pids of QEMU processes whose command line mentions this daemon's paths."""
        return qemu_processes_mentioning(str(self.base))


def qemu_processes_mentioning(text: str) -> list[int]:
    """Pids of running QEMU system emulators whose argv contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or not os.path.basename(argv[0]).startswith(b"qemu-system"):
            continue
        if any(text.encode() in arg for arg in argv):
            found.append(int(entry.name))
    return found
