"""Where a run's wrapper lives, so libvirt probes it once rather than on every run.

libvirt probes every new emulator path (two QEMU runs, about 4 s here) and caches the
result by path and the file's ctime. A wrapper written into each run's own directory
is a new path every time. So the wrapper for one (debugger, emulator, options) lives at
a stable path under the user's cache, is rewritten only when its text changes, and
writes its traces into ``output``, a symlink that each run points at its own output
directory. A lock keeps two runs from sharing it at once; a run that finds it taken
gets a wrapper of its own (and pays the probe).

The definition to restore is kept next to the wrapper, in ``saved/<domain>.xml``, so
the next run finds it from the domain's ``<emulator>`` if this one is killed.
"""

import fcntl
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from virt_debug import __version__

log = logging.getLogger(__name__)

WRAPPER_NAME = "qemu-wrapper"
HOOK_NAME = "onDefineDomain"
SAVED_DIR = "saved"


@dataclass
class Placement:
    """The wrapper path for one run, and the lock that holds it."""

    wrapper: Path
    hook: Path
    lock: IO[str] | None = None

    def saved_xml(self, name: str) -> Path:
        return saved_xml_path(self.wrapper, name)

    def release(self) -> None:
        if self.lock is not None:
            self.lock.close()
            self.lock = None


def saved_xml_path(wrapper: str | Path, name: str) -> Path:
    return Path(wrapper).parent / SAVED_DIR / f"{name}.xml"


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def _key(debugger: str, emulator: str, full: bool, extra_args) -> str:
    what = [__version__, debugger, emulator, full, list(extra_args)]
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]


def _write_if_changed(path: Path, text: str, mode: int) -> None:
    # Rewriting identical text would still change the ctime, and with it libvirt's
    # cache key: write only when the text differs, through a rename.
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except OSError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(mode)
    os.replace(tmp, path)


def _point(link: Path, target: Path) -> None:
    tmp = link.with_name(f".{link.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)


def _take(home: Path) -> IO[str] | None:
    lock = open(home / "lock", "a+")  # noqa: SIM115 (held for the whole run)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    return lock


def place(
    output: Path, *, debugger: str, emulator: str, full: bool, extra_args=()
) -> Placement:
    """Write the wrapper (stable path if free) and the hook script for one run."""
    from virt_debug.launch import hook_script
    from virt_debug.launch.wrapper import render_wrapper

    work = output / "work"
    work.mkdir(parents=True, exist_ok=True)
    home = _cache_dir() / "virt-debug" / "wrappers"
    home = home / f"{debugger}-{_key(debugger, emulator, full, extra_args)}"
    try:
        home.mkdir(parents=True, exist_ok=True)
        lock = _take(home)
        if lock is not None:
            _point(home / "output", output.resolve())
    except OSError as e:
        log.info("cannot use %s (%s): this run probes its own wrapper", home, e)
        lock = None

    if lock is not None:
        traces_to = home / "output"
    else:
        log.info("%s is not free: this run probes a wrapper of its own", home)
        home = work
        traces_to = output.resolve()
    text = render_wrapper(
        debugger,
        qemu=emulator,
        output=str(traces_to),
        full=full,
        extra_args=extra_args,
    )
    wrapper = home / WRAPPER_NAME
    _write_if_changed(wrapper, text, 0o755)

    hook = work / HOOK_NAME
    hook.write_text(hook_script(str(wrapper)), encoding="utf-8")
    hook.chmod(0o755)
    return Placement(wrapper, hook, lock)
