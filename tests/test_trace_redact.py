"""Redaction: secrets never reach a report, in any format, unless --no-redact."""

from pathlib import Path

import pytest

from virt_debug.trace import analyze_paths
from virt_debug.trace.model import Syscall
from virt_debug.trace.redact import Redactor, is_secret_path
from virt_debug.trace.report import FORMATS, render

CORPUS = Path(__file__).parent / "data" / "traces" / "qemu"
QMP_TRACE = CORPUS / "qmp-secret.strace"
SECRETS = ("hunter2-SECRET", "vd-MASTER-KEY-0123456789abcdefXY")


def call(name: str, args: str, retval: int = 1, fd_path: str | None = None) -> Syscall:
    return Syscall(
        "t", 1, 100, None, name, args, str(retval), retval, None, None, fd_path=fd_path
    )


def recv_byte(char: str) -> Syscall:
    escaped = char.replace("\\", "\\\\").replace('"', '\\"')
    args = (
        f'8<UNIX-STREAM:[1->2,"/run/qmp.sock"]>, {{msg_name=NULL, msg_namelen=0, '
        f'msg_iov=[{{iov_base="{escaped}", iov_len=1}}], msg_iovlen=1, '
        f"msg_controllen=0, msg_flags=MSG_CMSG_CLOEXEC}}, MSG_CMSG_CLOEXEC"
    )
    return call("recvmsg", args, fd_path='UNIX-STREAM:[1->2,"/run/qmp.sock"]')


def feed_bytes(redactor: Redactor, text: str) -> list[Syscall]:
    calls = [recv_byte(c) for c in text]
    for c in calls:
        redactor.feed(c)
    return calls


def test_monitor_secret_read_one_byte_per_call_is_hidden():
    message = (
        '{"execute": "object-add", "arguments": {"qom-type": "secret", '
        '"id": "s0", "data": "hun\\"ter2"}}\n'
    )
    redactor = Redactor()

    calls = feed_bytes(redactor, message)

    hidden = "".join(
        c for c, call in zip(message, calls, strict=True) if "<redacted>" in call.args
    )
    assert hidden == 'hun\\"ter2"'  # the value, through its closing quote
    assert redactor.calls == len(hidden)
    assert 'hun"ter2' in redactor.values
    # what came before the value is kept: the key and the rest of the command
    assert all("<redacted>" not in c.args for c in calls[: message.index("hun")])


@pytest.mark.parametrize("key", ["password", "secret", "passwd"])
def test_other_secret_keys_and_spacing(key):
    redactor = Redactor()
    message = f'{{"execute":"set_password","arguments":{{"{key}" :\t"pw-123456"}}}}'

    calls = feed_bytes(redactor, message)

    assert redactor.calls == len('pw-123456"')
    assert all("<redacted>" not in c.args for c in calls[:-12])


def test_object_values_and_other_keys_are_not_secret():
    redactor = Redactor()
    feed_bytes(redactor, '{"event": "X", "data": {"guest": false}, "id": "data"}\n')

    assert redactor.calls == 0


def test_streams_are_per_fd_and_reset_on_close():
    redactor = Redactor()
    feed_bytes(redactor, '{"data": "')
    redactor.feed(call("close", "8"))

    feed_bytes(redactor, "abc")

    assert redactor.calls == 0


def test_master_key_file_reads_and_writes_are_hidden():
    redactor = Redactor()
    read = call(
        "read", '3</var/lib/libvirt/qemu/domain-1-vm/master-key.aes>, "K3Y-bytes!", 32',
        retval=10, fd_path="/var/lib/libvirt/qemu/domain-1-vm/master-key.aes",
    )  # fmt: skip

    assert redactor.feed(read)

    assert (
        read.args
        == "3</var/lib/libvirt/qemu/domain-1-vm/master-key.aes>, <redacted>, 32"
    )
    assert "K3Y-bytes!" in redactor.values


def test_secret_object_file_from_argv_becomes_secret():
    redactor = Redactor()
    execve = call(
        "execve",
        '"/usr/bin/qemu-kvm", ["qemu-kvm", "-object", '
        '"secret,id=sec0,format=raw,file=/run/keys/disk.key", "-object", '
        '"{\\"qom-type\\":\\"secret\\",\\"id\\":\\"s1\\",\\"data\\":\\"pa55w0rd\\"}",'
        ' "-object", "secret,id=s2,data=inline-secret,format=raw"], '
        "0x7ffd /* 3 vars */",
        retval=0,
    )

    redactor.feed(execve)
    read = call(
        "read", '5, "disk-key-bytes", 64', retval=14, fd_path="/run/keys/disk.key"
    )

    assert redactor.feed(read)
    assert "pa55w0rd" not in execve.args and "inline-secret" not in execve.args
    assert "data=<redacted>" in execve.args
    assert '\\"data\\":\\"<redacted>' in execve.args


@pytest.mark.parametrize(
    "path,secret",
    [
        ("/var/lib/libvirt/qemu/domain-3-x/master-key.aes", True),
        ("/run/kubevirt-private/secrets/disk/key", True),
        ("/etc/pki/x.secret", True),
        ("/var/lib/libvirt/qemu/domain-3-x/master-key.aes (deleted)", True),
        ("/var/lib/libvirt/images/disk.qcow2", False),
    ],
)
def test_secret_paths(path, secret):
    assert is_secret_path(path) is secret


@pytest.fixture(scope="module")
def qmp_reports():
    redacted = analyze_paths([QMP_TRACE])
    plain = analyze_paths([QMP_TRACE], redact=False)
    return {
        fmt: (render(redacted, fmt, verbose=True), render(plain, fmt, verbose=True))
        for fmt in FORMATS
    }


@pytest.mark.parametrize("fmt", FORMATS)
def test_real_trace_secrets_absent_from_every_format(qmp_reports, fmt):
    redacted, _ = qmp_reports[fmt]

    for secret in SECRETS:
        assert secret not in redacted
    # the bits that could spell it out one character at a time are gone too
    assert "<redacted>" in redacted or "redacted" in redacted


@pytest.mark.parametrize("fmt", FORMATS)
def test_real_trace_no_redact_keeps_them(qmp_reports, fmt):
    _, plain = qmp_reports[fmt]

    for secret in SECRETS:
        assert secret in plain, f"{secret} missing from the {fmt} report"


def test_real_trace_monitor_message_shows_the_command_not_the_secret():
    a = analyze_paths([QMP_TRACE])

    adds = [m for m in a.monitor if "object-add" in m.text]
    assert len(adds) == 1 and adds[0].direction == "in"
    assert '"data": "<redacted>"' in adds[0].text
    assert a.secret_reads[0].path.endswith("master-key.aes")
    assert a.secret_reads[0].content is None and a.secret_reads[0].size == 32
    # Cited by the trace file that holds the line, not the folder it was found in.
    assert a.secret_reads[0].source == str(QMP_TRACE)
    assert a.redacted and a.redacted_calls >= 15


def test_argv_secrets_hidden_in_every_format(tmp_path):
    path = tmp_path / "argv.strace"
    path.write_text(
        '100 10:00:00.000001 execve("/usr/bin/qemu-system-x86_64", '
        '["qemu-system-x86_64", "-object", "secret,id=sec0,data=Pa55-argv-XYZ", '
        '"-vnc", ":0,password=on", "-spice", "port=5900,password=Sp1ce-pw-XYZ"], '
        "0x7ffd /* 3 vars */) = 0\n"
        '100 10:00:00.000002 write(2, "qemu: bad option secret,id=sec0,data=Pa55-argv-'
        'XYZ\\n", 48) = 48\n'
        "100 10:00:00.000003 +++ exited with 1 +++\n"
    )

    a = analyze_paths([path])

    assert "secret,id=sec0,data=<redacted>" in a.qemu_argv
    for fmt in FORMATS:
        out = render(a, fmt, verbose=True)
        assert "Pa55-argv-XYZ" not in out and "Sp1ce-pw-XYZ" not in out, fmt
    plain = render(analyze_paths([path], redact=False), "json")
    assert "Pa55-argv-XYZ" in plain and "Sp1ce-pw-XYZ" in plain
