"""Opening libvirt and asking it what the host offers.

libvirt-python prints every error it raises to stderr by default; we silence that once,
so the user sees one message from us instead of two.
"""

import logging
import os
import platform
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlparse

from virt_debug.errors import LibvirtError

log = logging.getLogger(__name__)

DEFAULT_URI = "qemu:///session"

_silenced = False


def _silence_default_handler() -> None:
    global _silenced
    import libvirt

    if not _silenced:
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        _silenced = True


def connect(uri: str = DEFAULT_URI):
    """An open ``virConnect`` to ``uri``; LibvirtError saying how to get one."""
    try:
        import libvirt
    except ImportError as e:
        raise LibvirtError(
            "the libvirt Python binding is not installed",
            hint="pip install libvirt-python (scripts/setup.sh does it)",
        ) from e
    _silence_default_handler()

    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as e:
        raise LibvirtError(
            f"cannot connect to libvirt at {uri}: {first_line(e)}",
            hint=_start_hint(uri),
        ) from e


def _start_hint(uri: str) -> str:
    if "session" in uri:
        return (
            "start a session daemon as this user with `libvirtd --timeout 0 &` "
            "(or `virtqemud`), or run `virt-debug demo` as root, which starts one "
            "for uid 107"
        )
    return "start the system daemon with `systemctl start libvirtd`, or check --connect"


def first_line(error: BaseException) -> str:
    """The first line of an error's message: libvirt's can run over several."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def is_session(uri: str) -> bool:
    return urlparse(uri).path.rstrip("/") == "/session"


def shareable_uri(conn) -> str:
    """A URI for this connection that works from any local shell, root's included.

    A session daemon found through ``XDG_RUNTIME_DIR`` (the private uid-107 one, say)
    is named by its socket, so a hint such as ``virsh -c URI list`` reaches it and
    not the caller's own session.
    """
    uri = conn.getURI()
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if not is_session(uri) or "socket=" in uri or not runtime:
        return uri
    for name in ("virtqemud-sock", "libvirt-sock"):
        socket = Path(runtime) / "libvirt" / name
        if socket.exists():
            return f"qemu+unix:///session?socket={socket}"
    return uri


def host_arch() -> str:
    machine = platform.machine()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def default_emulator(conn, arch: str, domain_type: str) -> str:
    """The emulator libvirt would fill in for a domain of ``arch`` and ``type``."""
    caps = ET.fromstring(conn.getCapabilities())
    for guest in caps.findall("guest"):
        arch_node = guest.find(f"arch[@name='{arch}']")
        if arch_node is None:
            continue
        for domain in arch_node.findall("domain"):
            if domain.get("type") == domain_type and domain.findtext("emulator"):
                return domain.findtext("emulator", "").strip()
        if arch_node.findtext("emulator"):
            return arch_node.findtext("emulator", "").strip()
    raise LibvirtError(
        f"libvirt knows no emulator for a {domain_type} guest of arch {arch}",
        hint="install QEMU for that architecture, or name one with --qemu",
    )


def qemu_log_path(uri: str, domain_name: str) -> Path:
    """Where libvirt writes a domain's QEMU log (command line and QEMU's stderr)."""
    if is_session(uri):
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
        return Path(cache) / "libvirt" / "qemu" / "log" / f"{domain_name}.log"
    return Path("/var/log/libvirt/qemu") / f"{domain_name}.log"
