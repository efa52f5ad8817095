"""The demo guest: a generated raw disk and a small domain XML, nothing downloaded.

The disk holds only ``bootsector.boot_sector()``: SeaBIOS boots it, it prints one line
on the serial port (which the domain logs to a file) and powers the guest off. The
broken variant makes the disk unreadable to QEMU's user (mode 000), so QEMU's open of
it fails and the summary has a path to name.
"""

import os
import platform
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from virt_debug.demo.bootsector import GREETING, boot_sector

DEFAULT_NAME = "virt-debug-demo"
DISK_SIZE = 1024 * 1024
MEMORY_MIB = 32


@dataclass
class DemoGuest:
    name: str
    directory: Path
    disk: Path
    serial_log: Path
    xml_path: Path
    domain_type: str

    def serial_text(self) -> str:
        try:
            return self.serial_log.read_text(encoding="ascii", errors="replace")
        except OSError:
            return ""

    def greeted(self) -> bool:
        """Whether the guest's line has reached the serial log."""
        return GREETING in self.serial_text()


def kvm_usable() -> bool:
    """KVM is there and this user may open it (and the host can run x86 guests)."""
    if platform.machine() not in ("x86_64", "amd64"):
        return False
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def domain_xml(name: str, disk: Path, serial_log: Path, domain_type: str) -> str:
    """A 32 MiB x86 guest: one IDE disk, serial to a file, no network, no graphics."""
    root = ET.Element("domain", type=domain_type)
    ET.SubElement(root, "name").text = name
    ET.SubElement(
        root, "description"
    ).text = (
        "virt-debug demo guest: a boot sector that prints one line on the serial port"
    )
    ET.SubElement(root, "memory", unit="MiB").text = str(MEMORY_MIB)
    ET.SubElement(root, "vcpu").text = "1"
    os_node = ET.SubElement(root, "os")
    ET.SubElement(os_node, "type", arch="x86_64").text = "hvm"
    ET.SubElement(os_node, "boot", dev="hd")
    # ACPI lets the boot sector power the guest off; without it QEMU gets -no-acpi.
    ET.SubElement(ET.SubElement(root, "features"), "acpi")
    ET.SubElement(root, "on_poweroff").text = "destroy"

    devices = ET.SubElement(root, "devices")
    disk_node = ET.SubElement(devices, "disk", type="file", device="disk")
    ET.SubElement(disk_node, "driver", name="qemu", type="raw")
    ET.SubElement(disk_node, "source", file=str(disk))
    ET.SubElement(disk_node, "target", dev="hda", bus="ide")
    ET.SubElement(devices, "controller", type="usb", model="none")
    serial = ET.SubElement(devices, "serial", type="file")
    ET.SubElement(serial, "source", path=str(serial_log))
    ET.SubElement(serial, "target", port="0")
    ET.SubElement(devices, "memballoon", model="none")

    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def create_guest(
    directory: Path,
    *,
    name: str = DEFAULT_NAME,
    broken: bool = False,
    power_off: bool = True,
    accel: str = "auto",
) -> DemoGuest:
    """Write the demo guest's disk and domain XML into ``directory``.

    ``accel``: "kvm", "tcg" or "auto" (KVM when this user can use it).
    ``power_off=False`` makes a guest that halts and runs until it is stopped.
    """
    directory.mkdir(parents=True, exist_ok=True)
    directory = directory.resolve()
    disk = directory / "disk.img"
    serial_log = directory / "serial.log"

    if disk.exists():
        disk.chmod(0o600)
    with disk.open("wb") as f:
        f.write(boot_sector(power_off=power_off))
        f.truncate(DISK_SIZE)
    if broken:
        # QEMU runs as this same user: mode 000 denies its open() unless it is root.
        disk.chmod(0o000)

    use_kvm = accel == "kvm" or (accel == "auto" and kvm_usable())
    domain_type = "kvm" if use_kvm else "qemu"
    xml_path = directory / "domain.xml"
    xml_path.write_text(domain_xml(name, disk, serial_log, domain_type))
    return DemoGuest(name, directory, disk, serial_log, xml_path, domain_type)
