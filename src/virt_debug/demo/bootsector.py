"""A 512-byte x86 boot sector, written as machine code by hand.

The firmware (SeaBIOS) loads it at 0000:7C00 in real mode. It writes one line to the
first serial port and then asks the machine to power off, so the demo guest ends on its
own. Nothing here is downloaded or assembled by an outside tool: each instruction is
spelled out next to its bytes, so the disk can be generated anywhere Python runs.
"""

LOAD_ADDRESS = 0x7C00
SERIAL_PORT = 0x3F8

# SeaBIOS places the ACPI PM registers at 0xB000 on i440fx (PIIX4) and at 0x600 on q35
# (ICH9); the PM1a control register is at +4. Writing SLP_EN (bit 13) with sleep type 0
# is QEMU's S5, a soft power-off, which libvirt reports as a guest shutdown. The guest
# writes both: on each machine the other port is unassigned and the write is ignored.
ACPI_PM1A_CONTROLS = (0xB004, 0x604)
ACPI_SLEEP_ENABLE_S5 = 0x2000

GREETING = "virt-debug demo guest: hello from the boot sector"


def _u16(value: int) -> bytes:
    return value.to_bytes(2, "little")


def boot_sector(message: str = GREETING, *, power_off: bool = True) -> bytes:
    """Return the boot sector that prints ``message`` on COM1 and powers off.

    With ``power_off=False`` the guest halts instead and runs until it is stopped.
    """
    text = message.encode("ascii") + b"\r\n\x00"

    # The message follows the code; its address is only known once the code length is,
    # and the code length does not depend on it, so lay the code out with a placeholder.
    def code(message_address: int) -> bytes:
        prologue = (
            b"\xfa"  # cli: no interrupts, nothing should wake the halt below
            + b"\x31\xc0"  # xor ax, ax
            + b"\x8e\xd8"  # mov ds, ax: the message is addressed from segment 0
            + b"\xfc"  # cld: lodsb walks forwards
            + b"\xbe"
            + _u16(message_address)  # mov si, message
            + b"\xba"
            + _u16(SERIAL_PORT)  # mov dx, COM1 data register
        )
        print_loop = (
            b"\xac"  # next: lodsb
            + b"\x84\xc0"  # test al, al
            + b"\x74\x03"  # jz done (skip the next 3 bytes)
            + b"\xee"  # out dx, al
            + b"\xeb\xf8"  # jmp next (back 8 bytes)
        )
        shutdown = b""
        if power_off:
            shutdown = b"\xb8" + _u16(ACPI_SLEEP_ENABLE_S5)  # done: mov ax, SLP_EN|S5
            for port in ACPI_PM1A_CONTROLS:
                shutdown += b"\xba" + _u16(port) + b"\xef"  # mov dx, port; out dx, ax
        halt = b"\xf4" + b"\xeb\xfd"  # halt: hlt; jmp halt (back 3 bytes)
        return prologue + print_loop + shutdown + halt

    body = code(0)
    body = code(LOAD_ADDRESS + len(body)) + text
    if len(body) > 510:
        raise ValueError(f"boot sector message too long ({len(body)} bytes of 510)")
    return body.ljust(510, b"\x00") + b"\x55\xaa"
