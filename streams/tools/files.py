"""Opening the files a command is given, and saying in a sentence why one cannot be read."""

from __future__ import annotations

import errno
import os
import stat
from typing import IO


def describe_os_error(exc: OSError, path: str) -> str:
    """A sentence for a file that cannot be opened, not Python's `[Errno 2] ...`."""
    if isinstance(exc, FileNotFoundError) or exc.errno == errno.ENOENT:
        return f"{path}: no such file"
    if isinstance(exc, IsADirectoryError) or exc.errno == errno.EISDIR:
        return f"{path} is a directory; give a file (JSON Lines)"
    if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM):
        return f"{path}: permission denied"
    return f"{path}: {exc.strerror or exc}"


def open_input(path: str) -> IO[bytes]:
    """`path` opened for reading in binary; a directory raises IsADirectoryError on every
    platform (open() does not refuse one everywhere)."""
    handle = open(path, "rb")  # noqa: SIM115
    if stat.S_ISDIR(os.fstat(handle.fileno()).st_mode):
        handle.close()
        raise IsADirectoryError(errno.EISDIR, "Is a directory", path)
    return handle
