"""Durations as the commands take them: ``90``, ``30s``, ``5m``, ``1.5h``."""

import math
import re

from virt_debug.errors import UsageError


def parse_duration(text: str, option: str = "--duration") -> float:
    """Seconds from ``90``, ``90s``, ``5m`` or ``1.5h`` given to ``option``; above 0."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text or "")
    seconds = 0.0
    if match:
        value, unit = float(match.group(1)), match.group(2) or "s"
        seconds = value * {"s": 1, "m": 60, "h": 3600}[unit]
    # Zero would end the wait at once; a number too long for a float is infinite.
    if not 0 < seconds < math.inf:
        raise UsageError(
            f"{option} {text!r} is not a duration above zero",
            hint="give seconds, or a number with s, m or h: 90, 30s, 5m, 1h",
        )
    return seconds
