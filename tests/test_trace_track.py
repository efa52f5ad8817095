"""The tracker: fd tables without -y, the thread tree, names and lifetimes."""

from pathlib import Path

import pytest

from virt_debug.trace.model import Syscall
from virt_debug.trace.parse import iter_events
from virt_debug.trace.track import Tracker

CORPUS = Path(__file__).parent / "data" / "traces" / "formats"


def track(tmp_path: Path, text: str) -> tuple[Tracker, dict[int, Syscall]]:
    path = tmp_path / "strace.log"
    path.write_text(text)
    tracker = Tracker()
    by_line = {}
    for event in iter_events([path]):
        tracker.feed(event)
        if isinstance(event, Syscall):
            by_line[event.line_no] = event
    return tracker, by_line


def test_failed_read_names_its_file_without_y(tmp_path: Path) -> None:
    _, calls = track(
        tmp_path,
        '10 openat(AT_FDCWD, "/var/lib/qemu/disk.img", O_RDONLY) = 7\n'
        "10 read(7, 0x7ffd, 512) = -1 EIO (Input/output error)\n"
        "10 close(7) = 0\n"
        "10 read(7, 0x7ffd, 512) = -1 EBADF (Bad file descriptor)\n",
    )

    assert calls[2].fd_path == "/var/lib/qemu/disk.img" and calls[2].errno == "EIO"
    assert calls[2].fd == 7
    assert calls[4].fd_path is None


def test_dups_fcntl_and_close_range(tmp_path: Path) -> None:
    _, calls = track(
        tmp_path,
        '1 open("/dev/kvm", O_RDWR|O_CLOEXEC) = 3\n'
        "1 dup(3) = 4\n"
        "1 dup2(3, 10) = 10\n"
        "1 dup3(3, 11, O_CLOEXEC) = 11\n"
        "1 fcntl(3, F_DUPFD, 20) = 20\n"
        "1 ioctl(4, KVM_CHECK_EXTENSION, 0x1) = 1\n"
        "1 ioctl(10, KVM_CREATE_VM, 0) = 5\n"
        '1 write(11, "x", 1) = 1\n'
        "1 read(20, 0x1, 1) = 0\n"
        "1 close_range(10, 15, 0) = 0\n"
        "1 read(10, 0x1, 1) = -1 EBADF (Bad file descriptor)\n"
        "1 read(20, 0x1, 1) = 0\n",
    )

    assert [calls[n].fd_path for n in (6, 7, 8, 9)] == ["/dev/kvm"] * 4
    assert calls[11].fd_path is None
    assert calls[12].fd_path == "/dev/kvm"


def test_relative_open_is_joined_to_the_directory_decoration(tmp_path: Path) -> None:
    _, calls = track(
        tmp_path,
        '1 openat(AT_FDCWD</run/libvirt>, "qemu/dom.pid", O_RDONLY) = 4\n'
        '1 read(4, "123", 10) = 3\n',
    )

    assert calls[2].fd_path == "/run/libvirt/qemu/dom.pid"


def test_pipes_sockets_and_anonymous_fds(tmp_path: Path) -> None:
    _, calls = track(
        tmp_path,
        "1 pipe2([3, 4], O_CLOEXEC) = 0\n"
        "1 socket(AF_UNIX, SOCK_STREAM|SOCK_CLOEXEC, 0) = 5\n"
        '1 connect(5, {sa_family=AF_UNIX, sun_path="/run/qmp.sock"}, 110) = 0\n'
        "1 eventfd2(0, EFD_CLOEXEC|EFD_NONBLOCK) = 6\n"
        '1 memfd_create("guest-ram", MFD_CLOEXEC) = 7\n'
        '1 write(4, "x", 1) = 1\n'
        "1 sendmsg(5, {msg_name=NULL}, 0) = 10\n"
        '1 write(6, "\\1\\0\\0\\0\\0\\0\\0\\0", 8) = 8\n'
        "1 ftruncate(7, 1048576) = 0\n",
    )

    assert calls[6].fd_path.startswith("pipe:")
    assert calls[7].fd_path == "socket:/run/qmp.sock"
    assert calls[8].fd_path == "anon_inode:[eventfd]"
    assert calls[9].fd_path == "/memfd:guest-ram"


def test_close_on_exec_fds_are_gone_after_execve(tmp_path: Path) -> None:
    _, calls = track(
        tmp_path,
        '1 openat(AT_FDCWD, "/a", O_RDONLY|O_CLOEXEC) = 3\n'
        '1 openat(AT_FDCWD, "/b", O_RDONLY) = 4\n'
        '1 openat(AT_FDCWD, "/c", O_RDONLY) = 5\n'
        "1 fcntl(5, F_SETFD, FD_CLOEXEC) = 0\n"
        '1 execve("/usr/bin/qemu-system-x86_64", ["qemu"], 0x1 /* 2 vars */) = 0\n'
        "1 read(3, 0x1, 1) = -1 EBADF (Bad file descriptor)\n"
        "1 read(4, 0x1, 1) = 1\n"
        "1 read(5, 0x1, 1) = -1 EBADF (Bad file descriptor)\n",
    )

    assert [calls[n].fd_path for n in (6, 7, 8)] == [None, "/b", None]


def test_threads_share_fds_and_processes_copy_them(tmp_path: Path) -> None:
    tracker, calls = track(
        tmp_path,
        "100 12:00:00.000001 clone3({flags=CLONE_VM|CLONE_FILES|CLONE_THREAD, "
        "exit_signal=0}, 88) = 101\n"
        "100 12:00:00.000002 clone(child_stack=NULL, flags=SIGCHLD) = 102\n"
        '101 12:00:00.000003 openat(AT_FDCWD, "/dev/kvm", O_RDWR) = 9\n'
        '102 12:00:00.000004 openat(AT_FDCWD, "/dev/null", O_RDWR) = 9\n'
        "100 12:00:00.000005 ioctl(9, KVM_RUN, 0) = 0\n"
        '102 12:00:00.000006 write(9, "x", 1) = 1\n'
        "101 12:00:00.000007 +++ exited with 0 +++\n"
        "102 12:00:00.000008 +++ killed by SIGTERM +++\n"
        "100 12:00:00.000009 +++ exited with 1 +++\n",
    )

    assert calls[5].fd_path == "/dev/kvm" and calls[6].fd_path == "/dev/null"
    thread, child = tracker.threads[101], tracker.threads[102]
    assert (thread.tgid, thread.parent, thread.is_thread) == (100, 100, True)
    assert (child.tgid, child.parent, child.is_thread) == (102, 100, False)
    assert child.ended == "killed by SIGTERM"
    assert tracker.threads[100].ended == "exited with 1"
    assert [t.tid for t in tracker.processes()] == [100, 102]
    assert [t.tid for t in tracker.children(100)] == [101, 102]
    assert child.last_time - child.first_time == pytest.approx(0.000004, abs=1e-7)


def test_child_seen_before_the_clone_result_is_linked_later(tmp_path: Path) -> None:
    tracker, calls = track(
        tmp_path,
        '100 openat(AT_FDCWD, "/etc/qemu/bridge.conf", O_RDONLY) = 3\n'
        "100 clone3({flags=CLONE_VM|CLONE_FILES|CLONE_THREAD}, 88 <unfinished ...>\n"
        '101 openat(AT_FDCWD, "/dev/net/tun", O_RDWR) = 4\n'
        "100 <... clone3 resumed>) = 101\n"
        "100 ioctl(4, TUNSETIFF, 0x7ffd) = -1 EBUSY (Device or resource busy)\n"
        '101 read(3, "x", 1) = 1\n',
    )

    assert tracker.threads[101].tgid == 100
    assert calls[5].fd_path == "/dev/net/tun"
    assert calls[6].fd_path == "/etc/qemu/bridge.conf"


def test_thread_names(tmp_path: Path) -> None:
    tracker, _ = track(
        tmp_path,
        '7 execve("/usr/libexec/qemu-kvm", ["qemu-kvm"], 0x1 /* 3 vars */) = 0\n'
        "7 clone3({flags=CLONE_VM|CLONE_THREAD}, 88) = 8\n"
        "7 clone3({flags=CLONE_VM|CLONE_THREAD}, 88) = 9\n"
        '8 prctl(PR_SET_NAME, "CPU 0/KVM") = 0\n'
        '9 openat(AT_FDCWD, "/proc/self/task/9/comm", O_RDWR) = 5\n'
        '9 write(5, "IO mon_iothread", 15) = 15\n',
    )

    names = {t.tid: t.comm for t in tracker.threads.values()}
    assert names == {7: "qemu-kvm", 8: "CPU 0/KVM", 9: "IO mon_iothread"}
    assert tracker.threads[7].execs == ["/usr/libexec/qemu-kvm"]


def test_corpus_threads_get_names_from_prctl_and_comm_writes() -> None:
    tracker = Tracker()
    for event in iter_events([CORPUS / "threads.strace"]):
        tracker.feed(event)

    names = sorted(t.comm for t in tracker.threads.values())
    assert names == ["renamed", "worker-0", "worker-1", "worker-2"]
    assert {t.tgid for t in tracker.threads.values()} == {tracker.first_pid}


def test_single_process_trace_keeps_pid_zero(tmp_path: Path) -> None:
    tracker, calls = track(
        tmp_path,
        'execve("/bin/true", ["true"], 0x1 /* 1 var */) = 0\n'
        'openat(AT_FDCWD, "/x", O_RDONLY) = 3\n'
        'read(3, "", 1) = 0\n'
        "+++ exited with 0 +++\n",
    )

    assert {c.pid for c in calls.values()} == {0}
    assert calls[3].fd_path == "/x"
    assert list(tracker.threads) == [0] and tracker.threads[0].ended == "exited with 0"


def test_yy_device_numbers_are_not_part_of_the_path(tmp_path: Path) -> None:
    tracker, calls = track(
        tmp_path,
        '1 openat(AT_FDCWD</root>, "/dev/kvm", O_RDWR) = 8</dev/kvm<char 10:232>>\n'
        "1 ioctl(8</dev/kvm<char 10:232>>, KVM_CREATE_VM, 0) = -1 ENOMEM (Cannot"
        " allocate memory)\n"
        "1 dup(8) = 9\n"
        "1 ioctl(9, KVM_CHECK_EXTENSION, 0x1) = 1\n"
        "1 ioctl(10</dev/net/tun<char 10:200>>, TUNSETIFF, 0x7ff) = -1 EPERM"
        " (Operation not permitted)\n",
    )

    assert calls[2].fd_path == "/dev/kvm" and calls[4].fd_path == "/dev/kvm"
    assert tracker.fd_path(1, 8) == "/dev/kvm"
    assert calls[5].fd_path == "/dev/net/tun"


def test_mmap_names_the_file_of_its_fd(tmp_path: Path) -> None:
    _, calls = track(
        tmp_path,
        '1 openat(AT_FDCWD, "/dev/hugepages/guest", O_RDWR|O_CREAT, 0600) = 5\n'
        "1 mmap(NULL, 67108864, PROT_READ|PROT_WRITE, MAP_SHARED, 5, 0) = -1 ENOMEM"
        " (Cannot allocate memory)\n"
        "1 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, 3</etc/ld.so.cache>, 0) = 0x7f00\n"
        "1 mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0)"
        " = 0x7f10\n",
    )

    assert (calls[2].fd, calls[2].fd_path) == (5, "/dev/hugepages/guest")
    assert (calls[3].fd, calls[3].fd_path) == (3, "/etc/ld.so.cache")
    assert calls[4].fd is None and calls[4].fd_path is None
