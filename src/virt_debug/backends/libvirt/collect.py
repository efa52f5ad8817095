"""What a run leaves in its output directory, and where libvirt put the rest.

The wrapper writes each real launch into its own directory ``<YYYYmmdd-HHMMSS>-<pid>``
(``-n`` appended on a clash) under the run's output directory, and ``status`` there
once QEMU has ended. libvirt appends the QEMU command line and QEMU's stderr to the
domain's log; we copy the part this run added.
"""

import logging
import re
import time
from pathlib import Path

log = logging.getLogger(__name__)

# libvirt's first line in the domain log for each start of the guest.
_START_MARKER = b": starting up libvirt version"
LAUNCH_NAME = re.compile(r"^\d{8}-\d{6}-\d+(-\d+)?$")
QEMU_LOG_NAME = "libvirt-qemu.log"

# QEMU's own messages start with its program name (``qemu-system-x86_64: ...``);
# with ``-msg timestamp=on`` an ISO time comes first.
_QEMU_MESSAGE = re.compile(
    r"^(?:\d{4}-\d\d-\d\dT[\d:.]+Z )?(?P<text>(?:qemu-system-[\w-]+|qemu-kvm): .*)$"
)


def launch_dirs(output: Path) -> list[Path]:
    """The per-launch directories under ``output``, oldest first."""
    if not output.is_dir():
        return []
    return sorted(
        p for p in output.iterdir() if p.is_dir() and LAUNCH_NAME.match(p.name)
    )


def trace_bytes(output: Path) -> int:
    """Total size of the launches' files so far (for the progress display)."""
    total = 0
    for launch in launch_dirs(output):
        for f in launch.iterdir():
            try:
                total += f.stat().st_size
            except OSError:
                pass
    return total


def wait_for_status(launches: list[Path], timeout: float = 15.0) -> list[Path]:
    """Wait until every launch has its ``status`` file; return those still without."""
    deadline = time.monotonic() + timeout
    missing = [p for p in launches if not (p / "status").exists()]
    while missing and time.monotonic() < deadline:
        time.sleep(0.1)
        missing = [p for p in missing if not (p / "status").exists()]
    for launch in missing:
        log.warning("%s: the wrapper wrote no status (QEMU may still run)", launch)
    return missing


def copy_last_start(source: Path, dest: Path) -> Path | None:
    """Copy the domain log from libvirt's header of the last start on; None if
    unreadable. (libvirt may truncate the log on a start, so offsets do not work.)"""
    try:
        data = source.read_bytes()
    except OSError as e:
        log.info("cannot read the libvirt domain log %s: %s", source, e)
        return None
    marker = data.rfind(_START_MARKER)
    if marker >= 0:
        data = data[data.rfind(b"\n", 0, marker) + 1 :]
    # QEMU's command line is in there, extra <qemu:arg>s with their secrets too.
    text = without_secrets(data.decode("utf-8", "surrogateescape"))
    dest.write_bytes(text.encode("utf-8", "surrogateescape"))
    return dest


# What the output directory keeps is for bug reports: no passwords, keys or secret
# data in it. An XML attribute (passwd='...', spaces allowed around '='); an option
# inside a value or a command line (data=..., password=..., key=... of -object
# secret, -drive rbd:...:key=...); a JSON member ("data": "...").
_XML_PASSWORD = re.compile(r"""\b(passwd|password)(\s*=\s*)(['"]).*?\3""", re.S)
_OPTION = re.compile(r"""((?:^|[,:\s'"])(?:data|password|passwd|key)=)([^,:\s'"]+)""")
_JSON = re.compile(r'("(?:data|password|passwd)"\s*:\s*")((?:[^"\\]|\\.)*)"')


def without_secrets(text: str) -> str:
    """``text`` (domain XML, libvirt's domain log) with secret values masked."""
    text = _XML_PASSWORD.sub(r"\1\2\3***\3", text)
    text = _OPTION.sub(r"\1***", text)
    return _JSON.sub(r'\1***"', text)


def last_qemu_message(log_path: Path | None) -> str | None:
    """QEMU's last error line in a libvirt domain log (warnings are skipped)."""
    if log_path is None or not log_path.is_file():
        return None
    found = None
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _QEMU_MESSAGE.match(line.strip())
        if not match:
            continue
        text = match.group("text")
        if ": warning: " in text or "terminating on signal" in text:
            continue
        found = text
    return found


def read_status(launch: Path) -> str | None:
    """How QEMU ended in that launch (``exit N`` / ``signal NAME``), if known."""
    try:
        return (launch / "status").read_text().strip() or None
    except OSError:
        return None
