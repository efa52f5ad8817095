"""The bundle in a distroless-like root: nothing but the uploaded tools and a QEMU.

As virt-launcher would: an empty root holding only QEMU with its own libraries and
firmware, and the tools directory (bundle + wrapper) uploaded by the helper command
at the path the PVC has in the compute container. As uid 107, the wrapper runs a real
QEMU launch under the bundled strace; the outputs come back through the fetch command.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from virt_debug.launch import bundle as b
from virt_debug.launch import transfer as t

PY39 = "/root/.pyenv/versions/3.9.18/bin/python3.9"
QEMU = "/usr/bin/qemu-system-x86_64"
TOOLS = "/var/run/virt-debug/tools"
OUTPUT = "/var/run/virt-debug/outputs"
EMULATOR = "/usr/libexec/qemu-kvm"
# The firmware and TCG module a `-M pc` start reads (Debian's QEMU finds them
# relative to its own directory).
IMAGE_FILES = (
    "/usr/share/seabios/bios-256k.bin",
    "/usr/share/qemu/kvmvapic.bin",
    "/usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so",
)
# What a launch by libvirt looks like, reduced: named, paused, monitor on stdio.
LAUNCH_ARGS = [
    "-name", "guest=t,debug-threads=on",
    "-machine", "pc,accel=tcg",
    "-nodefaults", "-no-user-config", "-display", "none",
    "-smbios", "type=1,serial=with spaces",
    "-chardev", "socket,id=charmonitor,path=/run/qmp/monitor.sock,server=on,wait=off",
    "-mon", "chardev=charmonitor,id=monitor,mode=control",
    "-S",
]  # fmt: skip

pytestmark = [
    pytest.mark.libvirt,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="chroot and uid 107 need root"),
    pytest.mark.skipif(
        not all(shutil.which(p) for p in ("strace", "unshare", "chroot"))
        or not os.path.exists(QEMU),
        reason="needs strace, QEMU, unshare and chroot (scripts/setup.sh has them)",
    ),
]


def _copy_in(root: Path, path: str) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, target)


def _qemu_root(root: Path) -> None:
    """QEMU, its loader, its libraries and firmware: the image's part of the root."""
    loader = Path(b.read_elf(Path(QEMU)).interpreter)
    _copy_in(root, str(loader))
    for library in b._library_closure(Path(QEMU), loader).values():
        _copy_in(root, str(library))
    for path in IMAGE_FILES:
        _copy_in(root, path)
    (root / EMULATOR.lstrip("/")).parent.mkdir(parents=True)
    shutil.copy(QEMU, root / EMULATOR.lstrip("/"))
    for mountpoint in ("proc", "dev"):
        (root / mountpoint).mkdir()
    # The launcher's private runtime directory, where libvirt puts the monitor.
    (root / "run/qmp").mkdir(parents=True)
    os.chown(root / "run/qmp", 107, 107)


def _upload_tools(root: Path, work: Path, python: str) -> None:
    """Build the bundle and the wrapper here; unpack them there with the pod command."""
    from virt_debug.launch.wrapper import render_wrapper

    bundle = b.build_bundle(work / "bundle")
    wrapper = render_wrapper(
        "strace", qemu=EMULATOR, output=OUTPUT, tool_dir=TOOLS, shell=f"{TOOLS}/bin/sh"
    )
    archive = b"".join(
        b.bundle_archive(bundle, extra={"wrapper": (wrapper.encode(), 0o755)})
    )

    # The PVC: group 107 (the pod's fsGroup), writable by QEMU's user.
    pvc = root / "var/run/virt-debug"
    pvc.mkdir(parents=True)
    (pvc / "outputs").mkdir()
    for path in (pvc, pvc / "outputs"):
        os.chown(path, 107, 107)
    result = subprocess.run(
        t.upload_command(str(root / TOOLS.lstrip("/")), python=python),
        input=archive,
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert t.parse_summary(result.stderr.decode()).files >= 12


def _find(exe: Path) -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "exe") == str(exe):
                    return int(entry.name)
            except OSError:
                continue
    return None


def _connect(path: Path, process: subprocess.Popen) -> socket.socket:
    """QEMU's monitor, once QEMU listens; its greeting read."""
    deadline = time.monotonic() + 120  # a guard against a hang, not a measurement
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"QEMU did not start: {process.stderr.read().decode()}")
        time.sleep(0.05)
    monitor = socket.socket(socket.AF_UNIX)
    monitor.connect(str(path))
    assert b'"QMP"' in monitor.recv(4096)
    return monitor


def _stop(process: subprocess.Popen, qemu: int | None) -> None:
    # The wrapper forwards SIGTERM to QEMU; SIGKILL only if that did not do it.
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if qemu and Path(f"/proc/{qemu}").exists():
        os.kill(qemu, signal.SIGKILL)


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


@pytest.fixture(scope="module")
def launch(tmp_path_factory):
    """One QEMU launch in the root; what we saw of it while it ran, and after."""
    if not os.access(PY39, os.X_OK):
        pytest.skip(f"{PY39} is absent: cannot run the helper as the pod's python3.9")
    pytest.importorskip("virt_debug.launch.wrapper", reason="the wrapper is not built")
    work = tmp_path_factory.mktemp("chroot")
    root = work / "root"
    _qemu_root(root)
    _upload_tools(root, work, PY39)

    # A mount namespace of its own gives the root the /proc and /dev every container
    # has; the mounts vanish with it. Only chroot's own process runs outside the root.
    script = (
        'root=$1 && shift && mount -t proc proc "$root/proc" && '
        'mount --rbind /dev "$root/dev" && exec chroot --userspec=107:107 "$root" "$@"'
    )
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
    argv += ["sh", str(root), f"{TOOLS}/wrapper", *LAUNCH_ARGS]
    env = {"PATH": "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/"}
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    seen, pid = {}, None
    try:
        monitor = _connect(root / "run/qmp/monitor.sock", process)

        # QEMU is paused and waiting for its monitor: look at it from outside.
        pid = _find(root / EMULATOR.lstrip("/"))
        assert pid, "QEMU is not running under its own name"
        strace = _parent(pid)
        seen["environ"] = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        seen["maps"] = Path(f"/proc/{pid}/maps").read_text()
        seen["strace_exe"] = os.readlink(f"/proc/{strace}/exe")
        seen["strace_maps"] = Path(f"/proc/{strace}/maps").read_text()
        seen["uid"] = Path(f"/proc/{pid}/status").read_text()

        with monitor:
            replies = monitor.makefile("rb")
            lines = []
            for command in ("qmp_capabilities", "quit"):
                # One at a time: QEMU quitting with a command still unread
                # resets the socket, and the replies read so far are lost.
                monitor.sendall(json.dumps({"execute": command}).encode() + b"\n")
                lines.append(replies.readline())
            try:
                lines += list(replies)
            except ConnectionResetError:
                pass  # QEMU is gone; what it said before is in lines
            seen["rest"] = b"".join(lines).decode()
        seen["rc"] = process.wait(timeout=120)
        seen["stderr"] = process.stderr.read().decode()
    finally:
        _stop(process, pid)
    return root, seen


def test_the_root_has_no_shell_and_no_coreutils_but_the_bundle(launch):
    root, _ = launch
    image = [p for p in root.rglob("*") if not p.is_relative_to(root / "var/run")]
    image = [p for p in image if not p.is_relative_to(root / "run")]
    names = {path.name for path in image}
    assert not {"sh", "bash", "dash", "busybox", "mkdir", "date", "cat", "env"} & names
    assert not (root / "bin").exists() and not (root / "etc").exists()
    assert not [p for p in image if "libunwind" in p.name], "strace needs the bundle"


def test_qemu_ran_paused_and_quit_cleanly_as_uid_107(launch):
    _, seen = launch

    assert seen["rc"] == 0, seen["stderr"]
    assert '"SHUTDOWN"' in seen["rest"]
    assert "\nUid:\t107\t107\t107\t107\n" in seen["uid"]


def test_strace_runs_from_the_bundle_through_its_loader(launch):
    root, seen = launch
    tools = str(root / TOOLS.lstrip("/"))

    assert seen["strace_exe"] == f"{tools}/lib/ld-linux-x86-64.so.2"
    assert f"{tools}/bin/strace" in seen["strace_maps"]
    assert f"{tools}/lib/libunwind-ptrace.so.0" in seen["strace_maps"]


def test_qemu_uses_its_own_loader_and_libraries_and_inherits_nothing(launch):
    root, seen = launch

    assert TOOLS not in seen["maps"] and "virt-debug" not in seen["maps"]
    assert f"{root}/lib64/ld-linux-x86-64.so.2" in seen["maps"] or (
        f"{root}/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" in seen["maps"]
    )
    assert not [
        v for v in seen["environ"] if b"virt-debug" in v or v.startswith(b"LD_")
    ]


def test_the_launch_trace_shows_qemu_its_libraries_and_threads(launch, tmp_path):
    root, _ = launch

    # Fetch the outputs back the way the tool does: the pod command, then our side.
    result = subprocess.run(
        t.fetch_command(str(root / OUTPUT.lstrip("/")), python=PY39),
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    t.unpack_stream([result.stdout], tmp_path / "fetched")
    launches = [p for p in (tmp_path / "fetched").iterdir() if p.is_dir()]
    assert len(launches) == 1
    launch_dir = launches[0]

    assert (launch_dir / "status").read_text() == "exit 0\n"
    argv = (launch_dir / "argv").read_bytes().split(b"\0")
    assert b"type=1,serial=with spaces" in argv
    trace = (launch_dir / "strace.log").read_text()
    assert (
        f'execve("{EMULATOR}", ["{EMULATOR}", "-name", "guest=t,debug-threads=on"'
        in (trace)
    )
    # After the execve, the tracee's own loader maps QEMU's libraries from the root.
    assert "/lib/x86_64-linux-gnu/libglib-2.0.so.0" in trace
    assert TOOLS not in trace.split("execve(", 1)[1]
    pids = {line.split()[0] for line in trace.splitlines() if line[:1].isdigit()}
    assert len(pids) > 1, "only one thread traced"
    assert "bios-256k.bin" in trace


def test_the_bundle_upload_works_as_uid_107_with_a_stock_python(tmp_path):
    # The helper pod runs as 107; python3.9 here lives under /root, out of its reach.
    python = "/usr/bin/python3"
    if not os.access(python, os.X_OK):
        pytest.skip(f"{python} is absent")
    bundle = b.build_bundle(tmp_path / "bundle")
    archive = b"".join(b.bundle_archive(bundle))

    # pytest's own temporary directories are closed to other users.
    with tempfile.TemporaryDirectory(prefix="virt-debug-pvc-") as pvc:
        os.chmod(pvc, 0o755)
        os.chown(pvc, 107, 107)
        result = subprocess.run(
            t.upload_command(f"{pvc}/tools", python=python),
            input=archive,
            capture_output=True,
            user=107,
            group=107,
            extra_groups=[],
            timeout=120,
        )

        assert result.returncode == 0, result.stderr
        assert Path(f"{pvc}/tools/bin/strace").stat().st_uid == 107
        run = subprocess.run(
            [*b.debugger_argv(f"{pvc}/tools"), "-V"], capture_output=True, env={}
        )
        assert run.returncode == 0
