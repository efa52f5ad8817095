"""Starting QEMU under a debugger: the emulator wrapper and the domain hook.

``wrapper.render_wrapper()`` writes the shell script libvirt runs in place of QEMU;
``hook_script()`` gives the standalone ``onDefineDomain`` hook that points a domain's
``<emulator>`` at that wrapper.
"""

import re
from importlib import resources

__all__ = ["hook_script"]

_EMULATOR_LINE = re.compile(r"^EMULATOR = .*$", re.MULTILINE)


def hook_script(emulator: str) -> str:
    """Source text of the standalone hook script with ``emulator`` baked in.

    The text runs on python3.9's standard library alone (the sidecar-shim image).
    """
    source = resources.files(__package__).joinpath("hook.py").read_text("utf-8")

    # repr() of a str is a valid Python 3.9 literal for any path, quotes included.
    line = f"EMULATOR = {emulator!r}"
    text, count = _EMULATOR_LINE.subn(lambda _: line, source, count=1)
    if count != 1:
        raise RuntimeError("hook.py lost its EMULATOR line")
    return text
