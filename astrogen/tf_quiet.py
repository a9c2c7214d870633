"""Import TensorFlow without its start-up noise.

TensorFlow's C++ runtime prints CUDA-plugin registration messages to file descriptor 2 when
it is imported, before any Python logging setting (or ``TF_CPP_MIN_LOG_LEVEL``) can act. The
command line therefore imports TensorFlow through :func:`import_tensorflow_quietly` (only when
a command needs it) unless ``-v 3`` asks for everything.
"""
from __future__ import annotations

import contextlib
import os
import sys

__all__ = ["import_tensorflow_quietly", "quiet_stderr"]


@contextlib.contextmanager
def quiet_stderr():
    """File descriptor 2 sent to /dev/null inside the block (C++ log lines that no
    Python setting reaches: TensorFlow's import, XLA's first compile). Python exceptions
    are unaffected."""
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


def import_tensorflow_quietly():
    """Import and return ``tensorflow`` with file descriptor 2 sent to /dev/null meanwhile."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with quiet_stderr():
        import tensorflow
    return tensorflow
