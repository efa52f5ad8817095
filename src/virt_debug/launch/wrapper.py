"""The emulator wrapper: the POSIX sh script libvirt runs in place of QEMU.

libvirt runs the wrapper for its capability probes as well as for the guest. A probe
(``-daemonize``, ``-machine none``, or no ``-name``: ``-version``, ``-help``) execs
QEMU untraced: a debugger following a daemonizing QEMU never exits and libvirt hangs.
A real launch gets a new directory ``OUTPUT/<YYYYmmdd-HHMMSS>-<pid>[-n]/`` (UTC, made
with a plain ``mkdir`` so two launches never share one) holding ``argv``
(NUL-separated), ``wrapper.log``, ``stderr`` (a copy of what QEMU and the debugger
wrote there, through a FIFO and ``tee``), the debugger's output, ``filter`` (what the
default mode leaves out) and, when QEMU ends, ``status`` (``exit N``/``signal NAME``).

The wrapper stays QEMU's grandparent rather than exec'ing the debugger: libvirt
signals the pid it started to stop the guest, and a debugger that dies on that signal
leaves QEMU running. So the wrapper traps TERM, INT, HUP and QUIT, forwards them to
QEMU (the debugger's child, from /proc), waits for the debugger and exits with
QEMU's status (128+N when stopped by signal N). SIGKILL cannot be trapped: a watcher
process polls the wrapper each second and kills QEMU when the wrapper is gone. The
debugger's ``--kill-on-exit`` (strace 6.6+) is added when its ``--help`` lists it.

The script uses shell builtins except ``mkdir``, ``date``, ``mkfifo``, ``tee``,
``sleep`` and ``rm``; with a tool bundle (the KubeVirt case) those come from the
bundle's static busybox, so it runs in a distroless virt-launcher. The debugger runs
through the bundle's own dynamic loader with ``--library-path``, never
``LD_LIBRARY_PATH``, so QEMU loads its own libraries; the wrapper also drops
``LD_LIBRARY_PATH``, ``LD_PRELOAD`` and the bundle's directories from ``PATH``.
"""

import re
import shlex
from collections.abc import Sequence
from importlib import resources

from virt_debug import debuggers
from virt_debug.debuggers.base import LAUNCH_DIR
from virt_debug.errors import UsageError

_MARKER = re.compile(r"@[A-Z_]+@")


def _word(word: str) -> str:
    """One shell word for an option that may name the launch directory."""
    pieces = word.split(LAUNCH_DIR)
    return '"$vd_dir"'.join(shlex.quote(piece) if piece else "" for piece in pieces)


def _quote(text: str) -> str:
    return shlex.quote(text)


def render_wrapper(
    debugger: str = "strace",
    *,
    qemu: str,
    output: str,
    full: bool = False,
    tool_dir: str | None = None,
    shell: str = "/bin/sh",
    extra_args: Sequence[str] = (),
) -> str:
    """The wrapper script text for ``debugger`` around the emulator ``qemu``.

    ``output``: where each launch's directory is created. ``tool_dir``: a portable tool
    bundle (``bin/<debugger>``, ``lib/`` with its loader, ``bin/sh`` a static busybox);
    None runs the debugger from PATH. ``shell``: the script's interpreter.
    ``extra_args``: more debugger options, after the defaults.
    """
    spec = debuggers.get(debugger)
    for name, value in (("qemu", qemu), ("output", output), ("shell", shell)):
        if not value.startswith("/"):
            raise UsageError(f"the {name} path must be absolute, got {value!r}")
    if tool_dir is not None and not tool_dir.startswith("/"):
        raise UsageError(f"the tool directory must be absolute, got {tool_dir!r}")
    if any(c.isspace() for c in shell):
        raise UsageError(f"the shell path cannot hold spaces: {shell!r}")

    options = " ".join(_word(w) for w in spec.options(full=full, extra=extra_args))
    filter_step = f"vd_log {_quote(spec.describe(full=full))}"
    left_out = spec.left_out(full=full)
    if left_out is not None:
        filter_step += f"\nprintf '%s\\n' {_quote(left_out)} >\"$vd_dir/filter\""
    note_step = ""
    if spec.note:
        note = spec.note.format(qemu=qemu)
        note_step = f"printf '%s\\n' {_quote(note)} >\"$vd_dir/note\""
    kill_step = "vd_kill_on_exit="
    if spec.kill_on_exit_flag:
        flag = spec.kill_on_exit_flag
        kill_step = (
            f"case $(vd_debugger --help 2>&1) in\n*{flag}*) vd_kill_on_exit={flag} ;;\n"
            f"*) vd_kill_on_exit= ;;\nesac"
        )

    replacements = {
        "@SHELL@": shell,
        "@DEBUGGER@": spec.name,
        "@PROGRAM@": _quote(spec.program),
        "@QEMU@": _quote(qemu),
        "@OUTPUT@": _quote(output.rstrip("/") or "/"),
        "@TOOLS@": _quote(tool_dir.rstrip("/")) if tool_dir else "''",
        "@FILTER@": filter_step,
        "@NOTE@": note_step,
        "@KILL_ON_EXIT@": kill_step,
        "@SIGNAL_TARGET@": spec.signal_target,
        "@OPTIONS@": options,
        "@DROP_SANDBOX@": "yes" if spec.drops_sandbox else "no",
    }
    # One pass, so a path that happens to contain a marker is left alone.
    template = resources.files(__package__).joinpath("wrapper.sh.in").read_text()
    return _MARKER.sub(lambda m: replacements[m.group(0)], template)
