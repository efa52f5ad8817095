"""Why an early QEMU start failed: ranked hints, each with the lines that show it.

Each rule watches the failed calls (and fatal signals) of the QEMU process for one
well-known cause: /dev/kvm, disk and firmware images, tap and vhost devices, huge
pages, memory locking, guest RAM the host cannot map, KVM ioctls, the seccomp
sandbox, crashes. A rule that fires is scored; QEMU's own error message confirming it
(its stderr names the device, path or error) raises the score; when QEMU exited with
0, only confirmed hints stay.
"""

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from virt_debug.trace import syntax
from virt_debug.trace.evidence import Evidence, StderrLog, evidence_of
from virt_debug.trace.model import Signal, Syscall
from virt_debug.trace.strings import human_bytes

MAX_EVIDENCE = 6
CRASH_SIGNALS = frozenset(
    {"SIGSEGV", "SIGABRT", "SIGBUS", "SIGILL", "SIGFPE", "SIGTRAP"}
)
_OPENS = frozenset({"open", "openat", "openat2", "creat"})
_LOOKUPS = _OPENS | {"access", "faccessat", "faccessat2", "stat", "newfstatat", "statx"}
_MLOCKS = frozenset({"mlockall", "mlock", "mlock2"})
_IMAGE_EXT = (".qcow2", ".img", ".raw", ".iso", ".vmdk", ".vdi", ".vhdx", ".fd", ".qed")
_IMAGE_OPTS = frozenset(
    {"-bios", "-pflash", "-kernel", "-initrd", "-cdrom", "-hda", "-hdb", "-hdc", "-hdd"}
)
_FILE_KEYS = re.compile(r'(?:^|[,{\s])"?(?:file|filename)"?\s*[=:]\s*"?([^,"}]+)')
_MEM_KEYS = re.compile(r'(?:^|[,{\s])"?mem-path"?\s*[=:]\s*"?([^,"}]+)')
_KVM_FDS = ("/dev/kvm", "anon_inode:kvm-vm", "anon_inode:kvm-vcpu")
_SCORES = {
    "seccomp": 95,
    "kvm-device": 90,
    "image": 85,
    "hugepages": 80,
    "memlock": 80,
    "guest-ram": 80,
    "tap-vhost": 80,
    "kvm-ioctl": 75,
    "crash": 60,
    "qemu-error": 20,
}


@dataclass
class Hint:
    rule: str  # the rule's id: "kvm-device", "image", ...
    title: str  # the finding, one line
    advice: str  # what to do about it
    score: int
    confirmed: bool  # QEMU's own message agrees
    evidence: list[Evidence] = field(default_factory=list)


@dataclass
class _Found:
    rule: str
    tgid: int
    call: Syscall
    path: str | None
    request: str | None
    evidence: list[Evidence] = field(default_factory=list)


def ioctl_request(call: Syscall) -> str | None:
    """The request name (or number) of an ioctl call."""
    parts = syntax.split_args(call.args, 3)
    return parts[1] if len(parts) > 1 else None


class Collector:
    """Fed by the analysis pass; ``hints`` ranks what it saw."""

    def __init__(self) -> None:
        self.images: set[str] = set()
        self.firmware: set[str] = set()
        self.mem_paths: list[str] = []
        self.sandbox: str | None = None
        self.found: dict[tuple, _Found] = {}
        self.signals: list[tuple[int, Signal, Evidence]] = []

    def argv(self, argv: list[str]) -> None:
        """QEMU's command line: which paths are its images and memory backends."""
        self.images, self.firmware, self.mem_paths = set(), set(), []
        for option, value in zip(argv, argv[1:], strict=False):
            if option in _IMAGE_OPTS:
                path = (
                    value.split("file=")[-1].split(",")[0]
                    if "file=" in value
                    else value
                )
                self.images.add(os.path.normpath(path))
                if option in ("-bios", "-pflash"):
                    self.firmware.add(os.path.normpath(path))
            elif option in ("-drive", "-blockdev"):
                for m in _FILE_KEYS.finditer(value):
                    self.images.add(os.path.normpath(m.group(1)))
            elif option == "-mem-path":
                self.mem_paths.append(os.path.normpath(value))
            elif option == "-object":
                self.mem_paths += [
                    os.path.normpath(m) for m in _MEM_KEYS.findall(value)
                ]
            elif option == "-sandbox":
                self.sandbox = value

    def names_image(self, path: str | None) -> bool:
        return path is not None and os.path.normpath(path) in self.images

    def failure(
        self,
        call: Syscall,
        tgid: int,
        path: str | None,
        request: str | None,
        expected: str | None = None,
    ) -> None:
        """A failed call; ``expected`` says why it is noise (the image rule still
        wants those: QEMU's search for a firmware file named on its command line)."""
        rule = self._rule(call, path, request)
        if rule is None or (
            expected is not None and rule in ("kvm-ioctl", "tap-vhost")
        ):
            return
        # One finding per thing that failed: an image's stat and open failures are
        # the same story, told best by the open.
        key = (rule, tgid, path, request, call.errno)
        found = self.found.get(key)
        if found is None:
            if len(self.found) > 500:
                return
            found = self.found[key] = _Found(rule, tgid, call, path, request)
        elif call.name in _OPENS and found.call.name not in _OPENS:
            found.call = call
        if len(found.evidence) < 2:
            found.evidence.append(evidence_of(call))

    def signal(self, event: Signal, tgid: int) -> None:
        if event.signal in CRASH_SIGNALS or event.signal == "SIGSYS":
            if len(self.signals) < 20:
                text = f"{event.pid} --- {event.signal} {event.info} ---"
                evidence = Evidence(event.source, event.line_no, event.time, text)
                self.signals.append((tgid, event, evidence))

    def _rule(self, call: Syscall, path: str | None, request: str | None) -> str | None:
        name = call.name
        errno = call.errno
        if path is not None:
            if path == "/dev/kvm" and name in _OPENS:
                return "kvm-device"
            if path.startswith(("/dev/net/tun", "/dev/vhost-")):
                tap_probe = errno == "EBADFD" and request == "TUNSETVNETHDRSZ"
                return None if tap_probe else "tap-vhost"
            if path.startswith(_KVM_FDS) and name == "ioctl":
                return None if _kvm_probe(errno, request) else "kvm-ioctl"
            if name in _LOOKUPS and errno not in ("EISDIR",):
                if self.names_image(path):
                    return "image"
                if name in _OPENS and path.lower().endswith(_IMAGE_EXT):
                    return "image"
            if "hugepages" in path or any(path.startswith(m) for m in self.mem_paths):
                return None if errno == "EISDIR" else "hugepages"
        if name in _MLOCKS or (
            name in ("setrlimit", "prlimit64") and "RLIMIT_MEMLOCK" in call.args
        ):
            return "memlock"
        if name == "mmap" and errno == "ENOMEM":
            if "MAP_HUGETLB" in call.args:
                return "hugepages"
            # Guest RAM is one big mapping; small ones failing are something else.
            if (_mmap_size(call) or 0) >= _GUEST_RAM_MIN:
                return "guest-ram"
        return None

    def hints(
        self,
        *,
        qemu_tgid: int | None,
        stderr: StderrLog,
        ended_signal: str | None,
        ended_code: int | None,
        core_dumped: bool,
        ended_evidence: Evidence | None,
        last_calls: list[Evidence],
    ) -> list[Hint]:
        """The ranked hints for the QEMU process ``qemu_tgid`` (all, when None)."""
        text = stderr.text
        out: list[Hint] = []
        for found in self.found.values():
            if qemu_tgid is not None and found.tgid != qemu_tgid:
                continue
            out.append(self._hint(found, stderr, text))

        signals = [e for t, s, e in self.signals if qemu_tgid in (None, t)]
        if ended_signal == "SIGSYS":
            evidence = [e for e in signals if "SIGSYS" in e.text]
            evidence += [ended_evidence] if ended_evidence else []
            sandbox = f" (-sandbox {self.sandbox})" if self.sandbox else ""
            out.append(
                Hint(
                    "seccomp",
                    f"QEMU was killed by its seccomp sandbox{sandbox}: SIGSYS",
                    "QEMU made a system call its -sandbox policy forbids (for example "
                    "spawn=deny while a tap script or migration needs to fork); the "
                    "last calls below show what it was doing. Relax the -sandbox "
                    "option or avoid the feature that needs the call.",
                    _SCORES["seccomp"],
                    "seccomp" in text or "sandbox" in text,
                    (evidence + last_calls[-3:])[:MAX_EVIDENCE],
                )
            )
        elif ended_signal in CRASH_SIGNALS or core_dumped:
            out.append(self._crash(ended_signal, core_dumped, signals, stderr))
            if ended_evidence:
                out[-1].evidence.append(ended_evidence)

        if _GUEST_RAM_SAID in text and not any(h.rule == "guest-ram" for h in out):
            # The mmap itself is not in the trace (or was too small to tell).
            out.append(
                Hint(
                    "guest-ram",
                    "guest RAM allocation failed: QEMU cannot set up guest memory",
                    _GUEST_RAM_ADVICE,
                    _SCORES["guest-ram"],
                    True,
                    stderr.evidence_for(_GUEST_RAM_SAID),
                )
            )
        if ended_code not in (None, 0) and not out and text.strip():
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            # QEMU's error line ("qemu-system-x86_64: ..."), not the advice line
            # that may follow it ("Use -machine help to list ...").
            errors = [
                x for x in lines if _ERROR_LINE.search(x) and ": warning:" not in x
            ]
            last = (errors or lines)[-1]
            out.append(
                Hint(
                    "qemu-error",
                    f"QEMU exited with status {ended_code}: {last}",
                    "No known cause matched; QEMU's message above is the best lead.",
                    _SCORES["qemu-error"],
                    True,
                    stderr.evidence_for(last) or stderr.last_line_evidence(),
                )
            )

        # A QEMU that exited with 0 did not fail: only what its own messages
        # complain about is worth a hint then.
        if ended_code == 0 and ended_signal is None:
            out = [hint for hint in out if hint.confirmed]
        for hint in out:
            hint.evidence.sort(key=lambda e: (e.source, e.line))
        out.sort(key=lambda h: (-h.score, _first_time(h)))
        return _dedupe(out)

    def _hint(self, found: _Found, stderr: StderrLog, text: str) -> Hint:
        call = found.call
        path = found.path or "?"
        errno = call.errno or "?"
        what = _ERRNO_WORDS.get(errno, errno)
        rule = found.rule
        needles: Iterable[str]
        if rule == "kvm-device":
            title = f"/dev/kvm {what}: QEMU cannot use KVM ({call.name} {errno})"
            advice = _KVM_ADVICE.get(errno, _KVM_ADVICE["EACCES"])
            needles = ("KVM", "kvm")
        elif rule == "image":
            kind = "firmware" if _is_firmware(path, self.firmware) else "disk image"
            title = f"{kind} {path} {what} ({call.name} {errno})"
            advice = _IMAGE_ADVICE.get(errno, _IMAGE_ADVICE["ENOENT"])
            needles = (path, os.path.basename(path))
        elif rule == "tap-vhost":
            device = "vhost-net" if "vhost" in path else "tap (/dev/net/tun)"
            op = f"{call.name} {found.request}" if found.request else call.name
            title = f"{device}: {op} failed with {errno} ({call.errmsg or what})"
            advice = _TAP_ADVICE if "tun" in path else _VHOST_ADVICE
            needles = ("vhost", "tap", "/dev/net/tun")
        elif rule == "hugepages":
            title = f"huge pages for guest RAM: {call.name} {errno} on {path}"
            advice = _HUGE_ADVICE
            needles = ("backing store", "hugepage", "huge page")
        elif rule == "guest-ram":
            size = human_bytes(_mmap_size(call) or 0)
            title = f"guest RAM allocation failed: {call.name} of {size} {errno}"
            advice = _GUEST_RAM_ADVICE
            needles = (_GUEST_RAM_SAID, "Cannot allocate memory")
        elif rule == "memlock":
            title = f"locking guest memory failed: {call.name} {errno}"
            advice = _MEMLOCK_ADVICE
            needles = ("locking memory", "mlock")
        else:
            title = f"KVM ioctl {found.request or '?'} failed with {errno}"
            advice = _KVM_IOCTL_ADVICE.get(errno, _KVM_IOCTL_ADVICE[""])
            needles = (found.request or "KVM_", "kvm", "KVM")

        confirmed = False
        evidence = list(found.evidence)
        for needle in needles:
            if needle and needle in text:
                confirmed = True
                evidence += stderr.evidence_for(needle)
                break
        score = _SCORES[rule] + (10 if confirmed else 0)
        return Hint(rule, title, advice, score, confirmed, evidence[:MAX_EVIDENCE])

    def _crash(
        self, sig: str | None, core: bool, signals: list[Evidence], stderr: StderrLog
    ) -> Hint:
        evidence = [e for e in signals if sig and sig in e.text][-2:]
        confirmed = False
        for needle in ("Assertion", "assertion", "**"):
            if needle in stderr.text:
                evidence = stderr.evidence_for(needle) + evidence
                confirmed = True
                break
        how = f"killed by {sig or 'a signal'}" + (" (core dumped)" if core else "")
        title = f"QEMU crashed: {how}"
        advice = (
            "Read QEMU's last message and the core dump (coredumpctl gdb, or gdb "
            "qemu-system-x86_64 core), or run the start again under gdbserver; a "
            "failure ranked above may be what led QEMU into the crash."
        )
        sender = _sender(signals, sig)
        if sender is not None:
            title = f"QEMU {how}: the signal was sent by process {sender} (kill)"
            advice = (
                f"Not a fault of QEMU's own: process {sender} sent the signal. Find "
                "out which program that is (a watchdog, a test harness, a person)."
            )
        return Hint(
            "crash", title, advice, _SCORES["crash"], confirmed, evidence[:MAX_EVIDENCE]
        )


def _mmap_size(call: Syscall) -> int | None:
    parts = syntax.split_args(call.args, 3)
    try:
        return int(parts[1], 0) if len(parts) > 1 else None
    except ValueError:
        return None


def _kvm_probe(errno: str | None, request: str | None) -> bool:
    # Size probes return E2BIG by design; KVM_RUN returns EINTR when kicked.
    return (errno == "E2BIG" and (request or "").startswith("KVM_GET_")) or (
        errno in ("EINTR", "EAGAIN") and request == "KVM_RUN"
    )


def _sender(signals: list[Evidence], sig: str | None) -> str | None:
    # si_code=SI_USER: another process sent it (kill), it is not a fault of QEMU's.
    for evidence in signals:
        if sig and sig in evidence.text and "si_code=SI_USER" in evidence.text:
            m = re.search(r"si_pid=(\d+)", evidence.text)
            return m.group(1) if m else "?"
    return None


def _is_firmware(path: str, firmware: set[str]) -> bool:
    low = path.lower()
    return (
        os.path.normpath(path) in firmware
        or "ovmf" in low
        or "edk2" in low
        or "bios" in low
        or low.endswith(".fd")
    )


def _first_time(hint: Hint) -> float:
    times = [e.time for e in hint.evidence if e.time is not None]
    return min(times) if times else 0.0


def _dedupe(hints: list[Hint]) -> list[Hint]:
    seen = set()
    out = []
    for hint in hints:
        if hint.title not in seen:
            seen.add(hint.title)
            out.append(hint)
    return out


_ERRNO_WORDS = {
    "ENOENT": "not found",
    "EACCES": "permission denied",
    "EPERM": "not permitted",
    "EROFS": "on a read-only file system",
    "ENXIO": "has no device behind it",
    "ENODEV": "has no device behind it",
    "EBUSY": "busy",
    "ENOMEM": "out of memory",
    "EMFILE": "too many open files",
}
_KVM_ADVICE = {
    "EACCES": "Run QEMU as a user in the group that owns /dev/kvm (usually kvm), or "
    "fix the device's mode; in a pod, the device must be exposed to the container.",
    "ENOENT": "Load the KVM module (kvm_intel or kvm_amd), enable virtualization in "
    "the firmware or nested virtualization in the host VM, or fall back to TCG.",
}
_KVM_ADVICE["EPERM"] = _KVM_ADVICE["EACCES"]
_IMAGE_ADVICE = {
    "ENOENT": "Check the path in the domain definition (and that the volume is "
    "mounted where QEMU runs).",
    "EACCES": "Give QEMU's user read (and write, for a writable disk) access to the "
    "file and every directory above it; check SELinux/AppArmor labels.",
    "EROFS": "The file system is read-only: mark the disk read-only or move it.",
}
_IMAGE_ADVICE["EPERM"] = _IMAGE_ADVICE["EACCES"]
_TAP_ADVICE = (
    "Creating a tap device needs CAP_NET_ADMIN: pre-create it for QEMU's user (ip "
    "tuntap add dev NAME mode tap user qemu), or let libvirt open it and pass the fd."
)
_VHOST_ADVICE = (
    "Load the vhost_net module (modprobe vhost_net) and give QEMU's user access to "
    "/dev/vhost-net, or turn vhost off for this interface."
)
_HUGE_ADVICE = (
    "Reserve enough huge pages for the guest's memory (vm.nr_hugepages, or hugepages= "
    "on the kernel command line) and check the hugetlbfs mount QEMU uses."
)
_GUEST_RAM_MIN = 64 << 20
_ERROR_LINE = re.compile(r"(?:^|\s)qemu[\w.-]*: ")
_GUEST_RAM_SAID = "cannot set up guest memory"
_GUEST_RAM_ADVICE = (
    "The host would not give QEMU the memory the guest asks for: lower the guest's "
    "memory (-m, <memory> in the domain), or check the host's free memory, its "
    "overcommit policy (vm.overcommit_memory) and QEMU's limits (ulimit -v, the "
    "memory cgroup or the pod's memory limit)."
)
_MEMLOCK_ADVICE = (
    "Raise the memory-lock limit of QEMU's user (ulimit -l, LimitMEMLOCK=, libvirt's "
    "<memtune><hard_limit>), or drop -overcommit mem-lock=on."
)
_KVM_IOCTL_ADVICE = {
    "EMFILE": "QEMU ran out of file descriptors: raise its open-files limit "
    "(ulimit -n, LimitNOFILE=).",
    "ENOMEM": "The kernel could not allocate memory for KVM: check the host's free "
    "memory and the memory cgroup limit.",
    "EBUSY": "Another hypervisor may hold the CPU's virtualization extensions.",
    "": "The host kernel or CPU refused the request: check the CPU model and "
    "machine options against what the host supports (dmesg may say more).",
}
