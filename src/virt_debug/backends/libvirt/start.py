"""Starting the domain without losing control of the run while libvirt waits.

libvirt's ``create()`` returns only once QEMU answers its monitor. Under gdbserver QEMU
is stopped before it gets there, so ``create()`` blocks until someone attaches gdb and
continues. It therefore runs in a thread: meanwhile the run shows each launch's
``note`` (how to attach) as soon as the wrapper writes it, and still honours Ctrl-C
and SIGTERM, destroying the half-started guest (which makes ``create()`` fail and
return) before the usual collect and restore. ``--duration`` counts from the end of
the start, as in the KubeVirt backend: a slow start (``--full``, valgrind, a user
attaching gdb) is never cut short by it.
"""

import logging
import threading
import time
from pathlib import Path

from virt_debug.backends.libvirt import collect
from virt_debug.backends.libvirt.connection import first_line

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2
# After destroy, how long create() may take to notice; then the run goes on anyway.
GIVE_UP_SECONDS = 60.0


def create(dom, options, stop, progress) -> str:
    """``dom.create()``; "" once it returned, else why it was abandoned.

    libvirt's own error is raised as is. "interrupted" means the guest was destroyed
    before the start finished.
    """
    failure: list[BaseException] = []

    def _create() -> None:
        try:
            dom.create()
        except BaseException as e:  # handed to the caller's thread
            failure.append(e)

    thread = threading.Thread(target=_create, name="libvirt-create", daemon=True)
    shown: set[Path] = set()
    thread.start()

    while thread.is_alive():
        show_notes(options.output, shown, progress)
        if stop.requested:
            _abandon(dom, thread)
            return "interrupted"
        # Join, not sleep: the run goes on the moment create() returns, so a start
        # takes no longer than libvirt's own (a stop request is seen within a poll).
        thread.join(POLL_SECONDS)

    show_notes(options.output, shown, progress)
    if failure:
        raise failure[0]
    return ""


def show_notes(output: Path, shown: set[Path], progress) -> None:
    """Each new launch's ``note`` (how to use its debugger), once."""
    for launch in collect.launch_dirs(output):
        note = launch / "note"
        if launch in shown or not note.is_file():
            continue
        shown.add(launch)
        try:
            text = note.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            continue
        if text:
            progress.notice(text)


def _abandon(dom, thread: threading.Thread) -> None:
    import libvirt

    # destroy kills QEMU first, which ends libvirt's wait inside create(); until the
    # process exists destroy may say the domain is not running, so try again.
    deadline = time.monotonic() + GIVE_UP_SECONDS
    while thread.is_alive() and time.monotonic() < deadline:
        try:
            dom.destroy()
        except libvirt.libvirtError as e:
            log.info("destroy during the start: %s", first_line(e))
        thread.join(1.0)
    if thread.is_alive():
        log.warning("libvirt's start did not return after destroy; going on")
