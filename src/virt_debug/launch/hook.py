#!/usr/bin/env python3
"""KubeVirt ``onDefineDomain`` hook: point the domain's emulator at our wrapper.

This module is itself the standalone hook script. The sidecar-shim image it runs in
has python3.9 and nothing else, so it uses the Python 3.9 standard library only and
nothing from the rest of virt-debug. ``virt_debug.launch.hook_script()`` returns this
source with the wrapper's path written into ``EMULATOR``.

The shim calls it as ``onDefineDomain --vmi <VMI JSON> --domain <domain XML>`` and takes
standard output as the new domain XML. Only the text of ``<devices><emulator>`` changes;
the rest is copied byte for byte from the input (namespaces, ``qemu:commandline``,
attribute order and quoting, comments, CRLF line ends, backslashes, ``*``, ``?``),
so expat checks the XML and its byte offsets tell where to splice the original text.
The first call of a start has no ``<emulator>`` at all (KubeVirt leaves it to
libvirt); later calls carry the one libvirt filled in. Running the hook on its own
output changes nothing. On malformed input it prints one line on standard error,
nothing on standard output, and exits 1, which fails the definition instead of
starting an unwrapped VM.
"""

import sys
from xml.parsers import expat

# Replaced by hook_script(); the default is where the KubeVirt backend puts the wrapper.
EMULATOR = "/var/run/virt-debug/bin/qemu-wrapper"

USAGE = "usage: onDefineDomain --vmi <VMI JSON> --domain <domain XML>"
VERSION = "virt-debug onDefineDomain hook 1"


class HookError(Exception):
    """The input cannot be rewritten; the message is shown as one line."""


def _escape_text(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _end_of_tag(data, start):
    # Attribute values may hold '>', so skip quoted runs when looking for the tag's end.
    quote = None
    for index in range(start, len(data)):
        char = data[index : index + 1]
        if quote:
            if char == quote:
                quote = None
        elif char in (b'"', b"'"):
            quote = char
        elif char == b">":
            return index + 1
    raise HookError(f"unterminated tag at byte {start}")


class _Scan:
    """Where <devices> and its <emulator> sit in the document, by byte offset."""

    def __init__(self, data):
        self.data = data
        self.depth = 0
        self.root = None
        self.devices = []
        self.emulators = []
        self._open = []

    def start(self, name, attrs):
        self.depth += 1
        offset = self.parser.CurrentByteIndex
        if self.depth == 1:
            self.root = name
        elif self.depth == 2 and name == "devices":
            self.devices.append([offset, None])
        elif self.depth == 3 and name == "emulator" and self._in_devices():
            self.emulators.append([offset, None])
        self._open.append((name, offset))

    def end(self, name):
        name, start = self._open.pop()
        # An empty element <x/> has no end tag: mark it by an end tag at its start.
        tag_end = _end_of_tag(self.data, start)
        if self.data[tag_end - 2 : tag_end] == b"/>":
            offset, end = start, tag_end
        else:
            offset = self.parser.CurrentByteIndex
            end = self.data.index(b">", offset) + 1
        if self.depth == 2 and name == "devices":
            self.devices[-1][1] = (offset, end)
        elif self.depth == 3 and name == "emulator" and self._in_devices():
            self.emulators[-1][1] = (offset, end)
        self.depth -= 1

    def _in_devices(self):
        return bool(self._open) and self._open[-1][0] == "devices" and self.depth == 3

    def doctype(self, name, *_):
        # Entities expand to text that is not in the input, so byte offsets inside
        # them point at the wrong place and a splice would break the XML. libvirt's
        # domain XML never has a DOCTYPE.
        raise HookError(f"the domain XML has a DOCTYPE (<!DOCTYPE {name}>): refused")

    def run(self):
        self.parser = expat.ParserCreate(encoding="UTF-8")
        self.parser.StartDoctypeDeclHandler = self.doctype
        self.parser.StartElementHandler = self.start
        self.parser.EndElementHandler = self.end
        try:
            self.parser.Parse(self.data, True)
        except expat.ExpatError as e:
            raise HookError(f"domain XML is not well-formed: {e}") from e
        return self


def _emulator_insertion(data, devices_start, devices_end, element):
    """The bytes that put a new <emulator> first in <devices>, and where they go."""
    tag_end = _end_of_tag(data, devices_start)
    end_tag_start, _ = devices_end

    # <devices/>: open it up so it can hold a child.
    if end_tag_start == devices_start:
        if data[tag_end - 2 : tag_end] != b"/>":
            raise HookError("cannot read the <devices> element")
        opening = data[devices_start : tag_end - 2].rstrip() + b">"
        return devices_start, tag_end, opening + element + b"</devices>"

    # Indent like the first child; the whitespace before it is already there.
    gap = data[tag_end:end_tag_start]
    lead = gap[: len(gap) - len(gap.lstrip())]
    if lead and tag_end + len(lead) == end_tag_start:
        # Only the closing tag follows: indent one step deeper than it.
        lead += b"\t" if b"\t" in lead else b"  "
    return tag_end, tag_end, lead + element


def check_emulator(emulator):
    """Refuse a path XML cannot carry as it is: control characters (a newline would
    come back as another path) and bytes that are not UTF-8."""
    for char in emulator:
        code = ord(char)
        if (
            code < 0x20
            or code == 0x7F
            or 0xD800 <= code <= 0xDFFF
            or code in (0xFFFE, 0xFFFF)
        ):
            raise HookError(
                f"the emulator path {emulator!r} has a character XML cannot "
                "carry (a control character or a byte that is not UTF-8)"
            )
    if not emulator.startswith("/"):
        raise HookError(f"the emulator path {emulator!r} is not absolute")


def set_emulator(domain_xml, emulator):
    """Return ``domain_xml`` with ``<devices><emulator>`` set to ``emulator``.

    Everything else is kept byte for byte. Raises HookError on malformed input.
    """
    check_emulator(emulator)
    data = domain_xml.encode("utf-8", "surrogateescape")
    scan = _Scan(data).run()
    if scan.root != "domain":
        raise HookError(f"the XML root is <{scan.root}>, expected <domain>")
    if not scan.devices:
        raise HookError("the domain has no <devices> element")
    if len(scan.devices) > 1:
        raise HookError(f"the domain has {len(scan.devices)} <devices> elements")
    if len(scan.emulators) > 1:
        raise HookError(f"<devices> has {len(scan.emulators)} <emulator> elements")

    text = _escape_text(emulator).encode("utf-8", "surrogateescape")
    if scan.emulators:
        start, (end_tag_start, end) = scan.emulators[0]
        tag_end = _end_of_tag(data, start)
        if end_tag_start == start:
            # <emulator/> has no content to replace: write the whole element.
            start, stop, new = start, end, b"<emulator>" + text + b"</emulator>"
        else:
            start, stop, new = tag_end, end_tag_start, text
    else:
        devices_start, devices_end = scan.devices[0]
        element = b"<emulator>" + text + b"</emulator>"
        start, stop, new = _emulator_insertion(
            data, devices_start, devices_end, element
        )
    return (data[:start] + new + data[stop:]).decode("utf-8", "surrogateescape")


def _parse_args(argv):
    """The --domain value, the flags seen; unknown arguments are ignored."""
    domain = None
    flags = set()
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--domain" and index + 1 < len(argv):
            domain = argv[index + 1]
            index += 1
        elif arg.startswith("--domain="):
            domain = arg[len("--domain=") :]
        elif arg == "--vmi":
            # Its value is JSON we do not need; skip it so it is never taken for a flag.
            index += 1
        elif arg in ("--help", "-h", "--version"):
            flags.add(arg)
        index += 1
    return domain, flags


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    domain, flags = _parse_args(argv)
    if domain is None and flags & {"--help", "-h"}:
        print(USAGE)
        return 0
    if domain is None and "--version" in flags:
        print(VERSION)
        return 0

    try:
        if domain is None:
            raise HookError("missing --domain <domain XML>; " + USAGE)
        result = set_emulator(domain, EMULATOR)
    except HookError as e:
        message = " ".join(str(e).split())
        sys.stderr.write(f"onDefineDomain: error: {message}\n")
        return 1

    # Bytes, so the XML reaches the shim exactly as built whatever the locale.
    sys.stdout.buffer.write(result.encode("utf-8", "surrogateescape"))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
