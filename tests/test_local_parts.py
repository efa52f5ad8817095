"""The local backend's small parts, without a daemon: durations, files, summaries."""

import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from virt_debug.backends.libvirt import collect, domain
from virt_debug.backends.libvirt.summary import plain_launch_summary
from virt_debug.cli.durations import parse_duration
from virt_debug.demo.guest import create_guest
from virt_debug.errors import UsageError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 30), ("45s", 45), ("5m", 300), ("1.5h", 5400), (" 2 m ", 120)],
)
def test_durations_in_seconds_or_with_a_unit(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "-3", "0", "m5", "9" * 400])
def test_bad_durations_are_usage_errors(text):
    with pytest.raises(UsageError, match="not a duration"):
        parse_duration(text)


def test_demo_guest_is_a_small_serial_only_domain(tmp_path):
    guest = create_guest(tmp_path, accel="tcg")

    root = ET.parse(guest.xml_path).getroot()
    assert root.get("type") == "qemu"
    assert root.findtext("memory") == "32"
    assert root.find("devices/interface") is None
    assert root.find("devices/graphics") is None
    assert root.find("devices/serial/source").get("path") == str(guest.serial_log)
    assert guest.disk.stat().st_size == 1024 * 1024


def test_broken_demo_disk_is_unreadable(tmp_path):
    guest = create_guest(tmp_path, broken=True, accel="tcg")

    assert guest.disk.stat().st_mode & 0o777 == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<domain><name>x</name>", "not valid XML"),
        ("<network><name>x</name></network>", "not a libvirt domain"),
        ("<domain type='kvm'/>", "has no <name>"),
    ],
)
def test_domain_files_are_checked_before_libvirt_sees_them(tmp_path, text, message):
    path = tmp_path / "guest.xml"
    path.write_text(text)

    with pytest.raises(UsageError, match=message):
        domain.read_file(path)


def test_plain_summary_groups_failures_and_names_threads(tmp_path):
    launch = tmp_path / "20261203-101500-42"
    launch.mkdir()
    (launch / "status").write_text("exit 1\n")
    (launch / "strace.log").write_text(
        "42<qemu-system-x86> 10:15:00.000001 openat(AT_FDCWD</>, "
        '"/var/lib/disk.img", O_RDWR) = -1 EACCES (Permission denied) <0.000010>\n'
        "43<CPU 0/KVM> 10:15:00.000002 openat(AT_FDCWD</>, "
        '"/etc/missing", O_RDONLY) = -1 ENOENT (No such file or directory)\n'
        "43<CPU 0/KVM> 10:15:00.000003 openat(AT_FDCWD</>, "
        '"/etc/missing", O_RDONLY) = -1 ENOENT (No such file or directory)\n'
    )

    text = plain_launch_summary(launch)

    assert "QEMU ended: exit 1" in text
    assert "threads traced: 2 (CPU 0/KVM, qemu-system-x86)" in text
    lines = text.splitlines()
    eacces = next(i for i, x in enumerate(lines) if "EACCES" in x)
    enoent = next(i for i, x in enumerate(lines) if "ENOENT" in x)
    # The telling failure comes before the routine one, although rarer.
    assert eacces < enoent
    assert "/var/lib/disk.img" in lines[eacces]
    assert lines[enoent].split()[0] == "2"


def test_qemu_error_line_is_found_in_libvirt_log(tmp_path):
    log = tmp_path / "guest.log"
    log.write_text(
        "2026-12-03 18:39:28.1+0000: starting up libvirt version: 9.0.0\n"
        "2026-12-03T18:39:28.7Z qemu-system-x86_64: warning: host doesn't support pni\n"
        "2026-12-03T18:39:28.8Z qemu-system-x86_64: -blockdev {}: Could not open "
        "'/d.img': Permission denied\n"
        "2026-12-03 18:39:29.0+0000: shutting down, reason=failed\n"
    )

    message = collect.last_qemu_message(log)

    assert message == (
        "qemu-system-x86_64: -blockdev {}: Could not open '/d.img': Permission denied"
    )


def test_unreachable_daemon_is_one_line_error_saying_how_to_start_one(tmp_path):
    env = dict(
        os.environ,
        XDG_RUNTIME_DIR=str(tmp_path),
        XDG_CONFIG_HOME=str(tmp_path),
        XDG_CACHE_HOME=str(tmp_path),
        HOME=str(tmp_path),
        LIBVIRT_AUTOSTART="0",
    )
    argv = [sys.executable, "-m", "virt_debug", "run", "strace", "some-domain"]
    # As root, run would otherwise drop to uid 107 and its own daemon.
    argv.append("--as-root")
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)

    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "cannot connect to libvirt" in lines[0] and "libvirtd" in lines[0]


def test_output_copies_mask_passwords_keys_and_secret_data():
    from virt_debug.backends.libvirt.collect import without_secrets

    text = (
        "<graphics type='vnc' passwd = \"SPACEDPW\"/>"
        "<qemu:arg value='secret,id=sx,data=QEMUARGSECRET99'/>\n"
        "-drive file=rbd:pool/img:id=admin:key=RBDKEY42:conf=/etc/ceph.conf "
        '-object {"qom-type":"secret","id":"s1","data":"JSONSECRET"}\n'
        "<keymap key='en-us'/>"
    )

    masked = without_secrets(text)

    for secret in ("SPACEDPW", "QEMUARGSECRET99", "RBDKEY42", "JSONSECRET"):
        assert secret not in masked
    # Everything else stays readable for the bug report.
    assert "id=admin:key=***:conf=/etc/ceph.conf" in masked
    assert "<keymap key='en-us'/>" in masked and "secret,id=sx,data=***" in masked
