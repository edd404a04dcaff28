"""Console output that cannot kill a training run.

`sac2real train | tee train.log`, then Ctrl-C: the terminal sends SIGINT to the whole pipeline, tee
exits first, and the trainer's next print (the signal handler's own notice, a progress bar refresh)
raises BrokenPipeError in the middle of the stop, before the checkpoint is written. With these
streams a vanished reader only silences the console: the fd is pointed at /dev/null (so the
interpreter's final flush cannot fail either) and training, its stop and its checkpoint go on."""
from __future__ import annotations

import errno
import os
import sys
from typing import TextIO


class QuietOnClosedPipe:
    """A text stream proxy that turns a broken or closed console into /dev/null."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.closed_reader = False

    def write(self, text: str) -> int:
        if not self.closed_reader:
            try:
                return self._stream.write(text)
            except (BrokenPipeError, ValueError, OSError) as exc:
                self._silence(exc)
        return len(text)

    def flush(self) -> None:
        if not self.closed_reader:
            try:
                self._stream.flush()
            except (BrokenPipeError, ValueError, OSError) as exc:
                self._silence(exc)

    def _silence(self, exc: Exception) -> None:
        if isinstance(exc, OSError) and not isinstance(exc, BrokenPipeError) and exc.errno not in (
                errno.EPIPE, errno.EBADF):
            raise exc
        self.closed_reader = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def guard_console() -> None:
    """Wrap sys.stdout and sys.stderr (once) so that output never raises on a gone reader."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, QuietOnClosedPipe):
            setattr(sys, name, QuietOnClosedPipe(stream))
