"""One traced start of a libvirt domain, from definition to restore.

The steps, each shown to the user as a phase:

* probing: write the wrapper and the hook script, define the domain through the hook
  twice (virt-launcher's sequence); the first define makes libvirt probe the wrapper
  as a new emulator, which the wrapper runs untraced;
* starting: ``create()``; a QEMU that fails at once makes this raise, and the run goes
  on to collect and explain;
* tracing: until the guest stops, the duration (counted from here) is up, the
  caller's ``watch`` says so, or Ctrl-C;
* collecting: destroy the guest if it still runs, wait for the wrapper's ``status``
  files, copy this run's part of libvirt's domain log, restore the definition.

Restoring is in a ``finally`` and signals only set a flag (``StopRequest``), so the
user's definition comes back on any failure and on Ctrl-C.
"""

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from virt_debug.backends.libvirt import collect, domain, start
from virt_debug.backends.libvirt.connection import first_line, qemu_log_path
from virt_debug.backends.libvirt.hook import define_through_hook
from virt_debug.backends.libvirt.placement import Placement, place
from virt_debug.backends.libvirt.stop import StopRequest
from virt_debug.errors import Interrupted, LibvirtError, UsageError

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2


class Progress:
    """What a run reports while it goes; the CLI draws it, the default is silent."""

    def phase(self, name: str, detail: str = "") -> None:
        log.info("%s: %s", name, detail)

    def tracing(self, elapsed: float, trace_bytes: int) -> None:
        pass

    def notice(self, text: str) -> None:
        """Something the user must see now (how to attach the debugger)."""
        log.warning("%s", text)


@dataclass
class RunOptions:
    debugger: str = "strace"
    output: Path = Path("virt-debug-out")
    duration: float | None = None
    full: bool = False
    qemu: str | None = None
    extra_args: Sequence[str] = ()


@dataclass
class RunResult:
    domain: str
    output: Path
    emulator: str
    launches: list[Path] = field(default_factory=list)
    # How tracing ended: "guest stopped", "duration", "watch", "interrupted",
    # or "start failed" (with start_error: libvirt's message).
    ended_by: str = ""
    start_error: str | None = None
    qemu_log: Path | None = None
    restore_error: str | None = None
    # Whether libvirt's start finished (create() returned): the guest ran.
    started: bool = False
    # Seconds per step: define (hook + probe), start (create() returned), traced.
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def interrupted(self) -> bool:
        return self.ended_by == "interrupted"


def _stop_guest(dom) -> None:
    import libvirt

    # libvirt may report the process busy while it is still being torn down; the
    # wrapper forwards the stop to QEMU, which can take a moment to exit.
    for attempt in range(5):
        try:
            if not dom.isActive():
                return
            dom.destroy()
            return
        except libvirt.libvirtError as e:
            log.info("destroy attempt %d failed: %s", attempt + 1, first_line(e))
            time.sleep(1.0)
    raise LibvirtError(
        f"cannot stop the guest {dom.name()}",
        hint=f"stop it with `virsh destroy {dom.name()}`",
    )


def _wait(dom, options, stop, progress, watch) -> str:
    import libvirt

    started = time.monotonic()
    while True:
        if stop.requested:
            return "interrupted"
        try:
            state = dom.state()[0]
        except libvirt.libvirtError:
            return "guest stopped"
        if state in (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_CRASHED):
            return "guest stopped"

        elapsed = time.monotonic() - started
        if options.duration is not None and elapsed >= options.duration:
            return "duration"
        if watch is not None and watch():
            return "watch"
        progress.tracing(elapsed, collect.trace_bytes(options.output))
        stop.wait(POLL_SECONDS)


def run(
    conn,
    target: domain.Target,
    options: RunOptions,
    *,
    progress: Progress | None = None,
    watch: Callable[[], bool] | None = None,
) -> RunResult:
    """Start ``target`` under the debugger, trace it, stop it, and restore it."""
    progress = progress or Progress()
    output = options.output
    # Everything that may refuse the run comes before the output directory exists:
    # a refused run leaves nothing behind.
    emulator = domain.real_emulator(conn, target, options.qemu)
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(
            f"cannot make the output directory {output}: {e.strerror}",
            hint="choose another --output",
        ) from e
    result = RunResult(target.name, output, emulator)
    # An output directory used before keeps its launches; ours are the new ones.
    earlier = set(collect.launch_dirs(output))

    with StopRequest() as stop:
        stop.on_repeat = lambda: progress.phase(
            "collecting", "still restoring the domain definition; please wait"
        )
        placement = place(
            output,
            debugger=options.debugger,
            emulator=emulator,
            full=options.full,
            extra_args=options.extra_args,
        )
        try:
            _traced_start(
                conn, target, options, progress, watch, stop, result, placement
            )
        finally:
            progress.phase(
                "collecting", "gathering the traces, restoring the domain definition"
            )
            try:
                _finish(conn, target, result, earlier, placement)
            finally:
                placement.release()

        if result.restore_error:
            raise LibvirtError(result.restore_error)
        if stop.requested and result.ended_by != "interrupted":
            # Ctrl-C before tracing began: nothing to explain, everything undone.
            raise Interrupted(
                f"interrupted by {stop.signal_name}; the definition of "
                f"{target.name} is restored"
            )
    return result


def _traced_start(
    conn, target, options, progress, watch, stop, result, placement: Placement
) -> None:
    output = options.output
    progress.phase("probing", f"defining {target.name} through the hook")
    domain.save_copy(target, placement.saved_xml(target.name))
    visible = target.saved_xml or target.xml
    (output / "domain.xml").write_text(
        collect.without_secrets(visible), encoding="utf-8"
    )

    t0 = time.monotonic()
    try:
        dom = define_through_hook(conn, placement.hook, target.xml, target.name)
    finally:
        result.timings["define"] = time.monotonic() - t0
    if stop.requested:
        return

    result.qemu_log = qemu_log_path(conn.getURI(), target.name)

    progress.phase("starting", f"libvirt starts {target.name}")
    t1 = time.monotonic()
    try:
        ended = start.create(dom, options, stop, progress)
    except Exception as e:
        import libvirt

        if not isinstance(e, libvirt.libvirtError):
            raise
        result.start_error = str(e).strip()
        result.ended_by = "start failed"
        return
    finally:
        result.timings["start"] = time.monotonic() - t1
    if ended:
        # Stopped while libvirt still waited for QEMU (gdbserver, a slow start).
        result.ended_by = ended
        return
    result.started = True

    progress.phase("tracing", f"{target.name} runs under {options.debugger}")
    t2 = time.monotonic()
    result.ended_by = _wait(dom, options, stop, progress, watch)
    result.timings["traced"] = time.monotonic() - t2


def _finish(
    conn,
    target: domain.Target,
    result: RunResult,
    earlier: set[Path],
    placement: Placement,
) -> None:
    """Stop the guest, gather the outputs, restore the definition (always)."""
    import libvirt

    try:
        try:
            dom = conn.lookupByName(target.name)
        except libvirt.libvirtError:
            dom = None
        if dom is not None:
            _stop_guest(dom)

        result.launches = [
            p for p in collect.launch_dirs(result.output) if p not in earlier
        ]
        collect.wait_for_status(result.launches)
        if result.qemu_log is not None:
            dest = result.output / collect.QEMU_LOG_NAME
            result.qemu_log = collect.copy_last_start(result.qemu_log, dest)
    finally:
        try:
            domain.restore(conn, target)
            placement.saved_xml(target.name).unlink(missing_ok=True)
        except LibvirtError as e:
            saved = placement.saved_xml(target.name)
            result.restore_error = str(e)
            if target.saved_xml is not None and saved.exists():
                result.restore_error += f"; put it back with `virsh define {saved}`"
            log.error("%s", e)
