"""Keep TensorFlow's native start-up chatter (absl/oneDNN/CUDA probes) off the user's terminal.

TensorFlow's C++ layer writes those lines straight to file descriptor 2 while its shared libraries load, and
recent releases ignore ``TF_CPP_MIN_LOG_LEVEL`` for them. Importing TensorFlow through :func:`tensorflow`
silences fd 2 for the duration of that one import only; ``DATACHECK_NATIVE_LOGS=1`` (set by ``-vv``) keeps
them. Python exceptions raised by the import are unaffected (they are printed after fd 2 is restored).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from types import ModuleType

NATIVE_LOGS_ENV = "DATACHECK_NATIVE_LOGS"


@contextlib.contextmanager
def quiet_native_logs() -> Iterator[None]:
    """Redirect fd 2 to /dev/null inside the block (no-op when asked to keep native logs)."""
    if os.environ.get(NATIVE_LOGS_ENV):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def tensorflow() -> ModuleType:
    """Import TensorFlow (once per process) without its native start-up lines."""
    if "tensorflow" not in sys.modules:
        with quiet_native_logs():
            import tensorflow as tf  # noqa: F401
    return sys.modules["tensorflow"]
