"""Just enough of the ELF format to build a portable bundle: machine and interpreter.

A statically linked binary has no PT_INTERP; asking the dynamic loader about one
crashes the loader, so the bundle reads the header itself before it asks.
"""

import struct
from dataclasses import dataclass
from pathlib import Path

from virt_debug.errors import UsageError

PT_DYNAMIC = 2
PT_INTERP = 3

# e_machine values of the architectures KubeVirt nodes run on, and their old cousins.
MACHINES = {3: "i386", 40: "arm", 62: "x86_64", 183: "aarch64", 243: "riscv64"}


@dataclass(frozen=True)
class ElfInfo:
    path: Path
    machine: str
    interpreter: str | None
    dynamic: bool

    @property
    def static(self) -> bool:
        # Static-pie binaries carry PT_DYNAMIC but relocate themselves: no loader.
        return self.interpreter is None


def read_elf(path: Path) -> ElfInfo:
    """Read the machine and the program interpreter of an ELF executable."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from e
    if data[:4] != b"\x7fELF" or len(data) < 64:
        raise UsageError(f"{path} is not an ELF executable")

    # The identification bytes say how to read the rest: 32/64 bits, byte order.
    wide = data[4] == 2
    order = "<" if data[5] == 1 else ">"
    (machine,) = struct.unpack_from(order + "H", data, 18)
    if wide:
        (phoff,) = struct.unpack_from(order + "Q", data, 32)
        phentsize, phnum = struct.unpack_from(order + "HH", data, 54)
    else:
        (phoff,) = struct.unpack_from(order + "I", data, 28)
        phentsize, phnum = struct.unpack_from(order + "HH", data, 42)

    interpreter = None
    dynamic = False
    for index in range(phnum):
        at = phoff + index * phentsize
        (p_type,) = struct.unpack_from(order + "I", data, at)
        if p_type == PT_DYNAMIC:
            dynamic = True
        elif p_type == PT_INTERP:
            if wide:
                offset, size = struct.unpack_from(order + "Q16xQ", data, at + 8)
            else:
                offset, size = struct.unpack_from(order + "I8xI", data, at + 4)
            interpreter = data[offset : offset + size].rstrip(b"\0").decode()

    name = MACHINES.get(machine, f"machine-{machine}")
    return ElfInfo(path=path, machine=name, interpreter=interpreter, dynamic=dynamic)
