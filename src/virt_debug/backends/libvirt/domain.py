"""The domain to trace: found by name or read from a file, and put back afterwards.

A run changes the user's persistent definition (its ``<emulator>``) for the time of one
start. What we keep to undo that is the inactive XML with secrets, exactly as libvirt
gave it; restoring defines it again. A domain that came from a file, or did not exist,
is undefined instead. The saved XML also sits next to the wrapper (mode 0600), so a
run that was killed outright can be undone by the next one (see ``recover``).
"""

import logging
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from virt_debug.backends.libvirt.connection import (
    default_emulator,
    first_line,
    host_arch,
    shareable_uri,
)
from virt_debug.backends.libvirt.placement import saved_xml_path
from virt_debug.errors import LibvirtError, UsageError

log = logging.getLogger(__name__)

# The first lines of every wrapper render_wrapper() writes carry this text.
WRAPPER_MARK = b"virt-debug emulator wrapper"


@dataclass
class Target:
    """A domain about to be traced, and how to leave it as it was."""

    name: str
    # The XML the hook starts from (the saved persistent one, or the file's).
    xml: str
    # The persistent definition to restore; None: undefine after the run.
    saved_xml: str | None
    emulator: str | None
    source: str


def _parse(xml: str, origin: str) -> ET.Element:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise UsageError(f"{origin} is not valid XML: {e}") from e
    if root.tag != "domain":
        raise UsageError(f"{origin} is not a libvirt domain: its root is <{root.tag}>")
    if not domain_name(root).strip():
        raise UsageError(f"{origin} has no <name>: libvirt needs one")
    return root


def domain_name(root: ET.Element) -> str:
    """The name as libvirt reads it (XPath ``string(./name[1])``): all the text
    inside the first <name>, markup dropped, spaces kept. Any other reading could
    look up, and then restore, a different domain than the one libvirt defines."""
    element = root.find("name")
    return "".join(element.itertext()) if element is not None else ""


def _emulator_of(root: ET.Element) -> str | None:
    text = root.findtext("devices/emulator")
    return text.strip() if text and text.strip() else None


def looks_like_file(spec: str) -> bool:
    return spec.endswith(".xml") or os.sep in spec or Path(spec).is_file()


def read_file(path: Path) -> tuple[str, str]:
    """Name and XML text of a domain XML file; UsageError if it is not one."""
    try:
        xml = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise UsageError(f"{path} is not UTF-8 text: {e.reason}") from e
    root = _parse(xml, str(path))
    return domain_name(root), xml


def resolve(conn, spec: str) -> Target:
    """The domain ``spec`` names (a defined domain, or a domain XML file)."""
    import libvirt

    if looks_like_file(spec):
        name, xml = read_file(Path(spec))
        try:
            conn.lookupByName(name)
        except libvirt.libvirtError:
            return Target(name, xml, None, _emulator_of(_parse(xml, spec)), spec)
        raise UsageError(
            f"a domain named {name!r} is already defined",
            hint=f"trace it by name (`virt-debug run strace {name}`), "
            f"or change <name> in {spec}",
        )

    try:
        domain = conn.lookupByName(spec)
    except libvirt.libvirtError as e:
        uri = shareable_uri(conn)
        raise UsageError(
            f"no domain named {spec!r} at {uri}",
            hint=f"list them with `virsh -c '{uri}' list --all`, "
            "or pass a domain XML file",
        ) from e
    if domain.isActive():
        raise UsageError(
            f"domain {spec!r} is running",
            hint=f"shut it down first (`virsh shutdown {spec}`): "
            "virt-debug traces QEMU from its start",
        )
    if not domain.isPersistent():
        raise UsageError(
            f"domain {spec!r} is not persistent; pass its XML file instead"
        )

    flags = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
    xml = domain.XMLDesc(flags)
    return Target(spec, xml, xml, _emulator_of(_parse(xml, spec)), spec)


def is_wrapper(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return WRAPPER_MARK in f.read(512)
    except OSError:
        return False


def recover(conn, target: Target) -> Target:
    """Undo what a killed run left: a definition whose emulator is our wrapper.

    The wrapper's directory holds the definition saved before that run; define it again.
    """
    if (
        target.saved_xml is None
        or not target.emulator
        or not is_wrapper(target.emulator)
    ):
        return target
    saved = saved_xml_path(target.emulator, target.name)
    if not saved.is_file():
        raise UsageError(
            f"domain {target.name!r} still runs QEMU through a virt-debug wrapper "
            f"({target.emulator}) and the definition saved before is gone",
            hint=f"set its <emulator> back with `virsh edit {target.name}`",
        )
    log.warning("%s: restoring the definition an interrupted run left", target.name)
    xml = saved.read_text(encoding="utf-8")
    define(conn, xml, what="restore the definition saved by an interrupted run")
    saved.unlink()
    return Target(
        target.name, xml, xml, _emulator_of(_parse(xml, str(saved))), target.source
    )


def real_emulator(conn, target: Target, override: str | None) -> str:
    """The QEMU the wrapper runs: --qemu, else the domain's, else libvirt's default."""
    if override:
        if not os.access(override, os.X_OK):
            raise UsageError(f"--qemu {override} is not an executable file")
        return override
    if target.emulator:
        return target.emulator
    root = ET.fromstring(target.xml)
    os_type = root.find("os/type")
    arch = os_type.get("arch") if os_type is not None else None
    return default_emulator(conn, arch or host_arch(), root.get("type") or "kvm")


def save_copy(target: Target, path: Path) -> None:
    """Keep the definition to restore where a later run can find it (mode 0600)."""
    if target.saved_xml is None:
        return
    path.parent.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(target.saved_xml)


def define(conn, xml: str, *, what: str):
    """``defineXML`` with a one-line LibvirtError naming the step on failure."""
    import libvirt

    try:
        return conn.defineXML(xml)
    except libvirt.libvirtError as e:
        raise LibvirtError(f"cannot {what}: {first_line(e)}") from e


def restore(conn, target: Target) -> None:
    """Put the definition back as it was: define the saved XML, or undefine."""
    import libvirt

    if target.saved_xml is not None:
        define(conn, target.saved_xml, what=f"restore the definition of {target.name}")
        return
    try:
        domain = conn.lookupByName(target.name)
    except libvirt.libvirtError:
        return
    try:
        domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM)
    except libvirt.libvirtError as e:
        raise LibvirtError(
            f"cannot undefine {target.name} after the run: {first_line(e)}",
            hint=f"remove it with `virsh undefine {target.name}`",
        ) from e
