"""Ctrl-C and SIGTERM as requests, not exceptions.

A run must put the user's domain definition back whatever happens. If SIGINT raised
KeyboardInterrupt at an arbitrary point, it could land inside the restore itself. So
while a run holds a ``StopRequest`` the signals only set a flag: the run checks it
between its steps, ends tracing early, and always finishes restoring.
"""

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopRequest:
    """Context manager: while active, SIGINT/SIGTERM/SIGHUP set ``requested``."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.count = 0
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}
        self.on_repeat: Callable[[], None] | None = None

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True at once if a stop is requested."""
        return self._event.wait(seconds)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.count += 1
        self.signal_name = signal.Signals(signum).name
        self._event.set()
        if self.count > 1 and self.on_repeat is not None:
            self.on_repeat()

    def __enter__(self) -> "StopRequest":
        # Handlers can only be set from the main thread; elsewhere (a test runner's
        # worker thread) the run simply cannot be interrupted by a signal.
        if threading.current_thread() is threading.main_thread():
            for signum in _SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *_exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
