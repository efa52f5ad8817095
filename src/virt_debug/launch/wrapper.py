"""The emulator wrapper: the POSIX sh script libvirt runs in place of QEMU.

libvirt runs the wrapper for its capability probes as well as for the guest. A probe
(``-daemonize``, ``-machine none``, or no ``-name``: ``-version``, ``-help``) execs QEMU
untraced: a debugger following a daemonizing QEMU would never exit and libvirt would
hang. A real launch gets a new directory ``OUTPUT/<YYYYmmdd-HHMMSS>-<pid>[-n]/`` (UTC,
created with a plain ``mkdir`` so two launches never share one) holding ``argv``
(NUL-separated), ``wrapper.log``, the debugger's output and, when QEMU ends, ``status``.

The wrapper stays QEMU's grandparent rather than exec'ing the debugger: libvirt signals
the pid it started to stop the guest, and a debugger that dies on that signal would leave
QEMU running. So the wrapper traps TERM, INT, HUP and QUIT, forwards them to QEMU (found
as the debugger's child in /proc), waits for the debugger and exits with QEMU's status.
A SIGKILL cannot be caught; then the debugger keeps running QEMU until QEMU ends, unless
the debugger has ``--kill-on-exit`` (strace 6.6+), which the wrapper uses when present.

The script uses shell builtins except ``mkdir`` and ``date``; with a tool bundle (the
KubeVirt case) those come from the bundle's static busybox, so it runs in a distroless
virt-launcher. The debugger is run through the bundle's own dynamic loader with
``--library-path``, never ``LD_LIBRARY_PATH``, so QEMU loads its own libraries; the
wrapper also drops ``LD_LIBRARY_PATH``, ``LD_PRELOAD`` and the bundle from ``PATH``.
"""

import re
import shlex
from collections.abc import Sequence

from virt_debug import debuggers
from virt_debug.debuggers.base import LAUNCH_DIR
from virt_debug.errors import UsageError

_TEMPLATE = r"""#!@SHELL@
# virt-debug emulator wrapper: libvirt runs this in place of QEMU.
# Capability probes run QEMU untraced; each real launch runs QEMU under @DEBUGGER@
# into a new directory under OUTPUT. Made by `virt-debug wrapper-script`.
QEMU=@QEMU@
OUTPUT=@OUTPUT@
TOOLS=@TOOLS@

# Nothing the tools need may reach QEMU: libvirt gives QEMU a clean environment.
unset LD_LIBRARY_PATH LD_PRELOAD LD_AUDIT
if [ -n "$TOOLS" ]; then
	vd_path=
	vd_rest=$PATH:
	while [ -n "$vd_rest" ]; do
		vd_entry=${vd_rest%%:*}
		vd_rest=${vd_rest#*:}
		case $vd_entry in "$TOOLS"|"$TOOLS"/*) continue ;; esac
		vd_path=${vd_path:+$vd_path:}$vd_entry
	done
	PATH=$vd_path
fi

vd_is_probe() {
	vd_prev=
	vd_named=no
	for vd_arg do
		case $vd_arg in
		-daemonize | --daemonize) return 0 ;;
		-name | --name) vd_named=yes ;;
		esac
		case $vd_prev in
		-machine | --machine | -M | --M)
			case $vd_arg in none | none,* | type=none | type=none,*) return 0 ;; esac
			;;
		esac
		vd_prev=$vd_arg
	done
	[ "$vd_named" = no ]
}

if vd_is_probe "$@"; then
	printf 'probe by pid %s: %s\n' "$$" "$*" 2>/dev/null >>"$OUTPUT/probes.log"
	exec "$QEMU" "$@"
fi

vd_fail() {
	printf 'virt-debug wrapper: %s\n' "$*" >&2
	exit 1
}

# mkdir and date from PATH, else from the bundle's static busybox (distroless pods).
vd_tool() {
	if command -v "$1" >/dev/null 2>&1; then
		"$@"
	elif [ -n "$TOOLS" ] && [ -x "$TOOLS/bin/busybox" ]; then
		"$TOOLS/bin/busybox" "$@"
	elif [ -n "$TOOLS" ] && [ -x "$TOOLS/bin/sh" ]; then
		"$TOOLS/bin/sh" -c '"$@"' sh "$@"
	else
		return 127
	fi
}

vd_tool mkdir -p "$OUTPUT" 2>/dev/null
vd_stamp=$(vd_tool date -u +%Y%m%d-%H%M%S 2>/dev/null) || vd_stamp=
vd_base=$OUTPUT/${vd_stamp:-00000000-000000}-$$
vd_dir=$vd_base
vd_n=0
# mkdir without -p fails if the directory exists: each launch gets its own.
until vd_tool mkdir "$vd_dir" 2>/dev/null; do
	vd_n=$((vd_n + 1))
	[ "$vd_n" -le 99 ] ||
		vd_fail "cannot create a directory in $OUTPUT for this launch's trace: make it writable by QEMU's user, or point the wrapper elsewhere (--output)"
	vd_dir=$vd_base-$vd_n
done

vd_log() {
	printf '%s\n' "$*" >>"$vd_dir/wrapper.log"
}

printf '%s\0' "$QEMU" "$@" >"$vd_dir/argv"
vd_log "virt-debug wrapper: pid $$, debugger @DEBUGGER@, emulator $QEMU"
@FILTER@
@NOTE@
# The debugger as a command; with a bundle, through the bundle's own loader.
vd_loader=
if [ -n "$TOOLS" ]; then
	vd_program=$TOOLS/bin/@PROGRAM@
	for vd_f in "$TOOLS"/lib/ld-linux*.so* "$TOOLS"/lib/ld-musl*.so* "$TOOLS"/lib64/ld-linux*.so*; do
		if [ -f "$vd_f" ]; then
			vd_loader=$vd_f
			break
		fi
	done
else
	vd_program=@PROGRAM@
fi
vd_debugger() {
	if [ -n "$vd_loader" ]; then
		exec "$vd_loader" --library-path "$TOOLS/lib" "$vd_program" "$@"
	fi
	exec "$vd_program" "$@"
}
@KILL_ON_EXIT@
vd_dpid=
vd_sig=
vd_child() {
	vd_c=
	if [ -r "/proc/$vd_dpid/task/$vd_dpid/children" ]; then
		read -r vd_c vd_x 2>/dev/null <"/proc/$vd_dpid/task/$vd_dpid/children" || :
	fi
	if [ -z "$vd_c" ]; then
		# Kernels without /proc/PID/task/TID/children: find the debugger's child by ppid.
		for vd_s in /proc/[0-9]*/stat; do
			read -r vd_line 2>/dev/null <"$vd_s" || continue
			set -- ${vd_line##*) }
			if [ "$2" = "$vd_dpid" ]; then
				vd_c=${vd_s#/proc/}
				vd_c=${vd_c%/stat}
				break
			fi
		done
	fi
	printf '%s' "${vd_c:-$vd_dpid}"
}
vd_forward() {
	vd_sig=$1
	[ -n "$vd_dpid" ] || return 0
	if [ "@SIGNAL_TARGET@" = tracee ]; then
		vd_target=$(vd_child)
	else
		vd_target=$vd_dpid
	fi
	vd_log "got SIG$1: sending it to pid $vd_target"
	kill -s "$1" "$vd_target" 2>/dev/null || kill -s "$1" "$vd_dpid" 2>/dev/null
}
trap 'vd_forward TERM' TERM
trap 'vd_forward INT' INT
trap 'vd_forward HUP' HUP
trap 'vd_forward QUIT' QUIT
[ -z "$vd_sig" ] || vd_fail "stopped by SIG$vd_sig before QEMU started"

vd_debugger $vd_kill_on_exit @OPTIONS@ "$QEMU" "$@" &
vd_dpid=$!
vd_log "$vd_program started as pid $vd_dpid"

# A trapped signal interrupts wait; wait again until the debugger itself has ended.
while :; do
	wait "$vd_dpid"
	vd_rc=$?
	kill -0 "$vd_dpid" 2>/dev/null || break
done

vd_signum() {
	case $1 in
	HUP) echo 1 ;; INT) echo 2 ;; QUIT) echo 3 ;; ILL) echo 4 ;; TRAP) echo 5 ;;
	ABRT) echo 6 ;; BUS) echo 7 ;; FPE) echo 8 ;; KILL) echo 9 ;; SEGV) echo 11 ;;
	PIPE) echo 13 ;; ALRM) echo 14 ;; TERM) echo 15 ;; SYS) echo 31 ;; *) echo 0 ;;
	esac
}
if [ -n "$vd_sig" ]; then
	vd_log "QEMU ended (status $vd_rc) after SIG$vd_sig"
	vd_status="signal $vd_sig"
	vd_rc=$((128 + $(vd_signum "$vd_sig")))
elif [ "$vd_rc" -gt 128 ]; then
	vd_name=$(kill -l "$vd_rc" 2>/dev/null) || vd_name=$((vd_rc - 128))
	vd_status="signal ${vd_name#SIG}"
else
	vd_status="exit $vd_rc"
fi
printf '%s\n' "$vd_status" >"$vd_dir/status"
vd_log "status: $vd_status"
exit "$vd_rc"
"""

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
    left_out = spec.left_out(full=full)
    if left_out is None:
        filter_step = "vd_log 'recording everything: no calls left out'"
    else:
        filter_step = (
            f"printf '%s\\n' {_quote(left_out)} >\"$vd_dir/filter\"\n"
            f"vd_log {_quote('left out (never recorded): ' + left_out)}"
        )
    note_step = ""
    if spec.note:
        note_step = f'printf \'%s\\n\' {_quote(spec.note)} >"$vd_dir/note"'
    kill_step = "vd_kill_on_exit="
    if spec.kill_on_exit_flag:
        flag = spec.kill_on_exit_flag
        kill_step = (
            f'case $(vd_debugger --help 2>&1) in\n*{flag}*) vd_kill_on_exit={flag} ;;\n'
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
    }
    # One pass, so a path that happens to contain a marker is left alone.
    return _MARKER.sub(lambda m: replacements[m.group(0)], _TEMPLATE)
