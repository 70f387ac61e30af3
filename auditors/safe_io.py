"""Read untrusted files without hanging or following the unexpected.

A path in a manifest or an ImageFolder tree may name a FIFO (``open`` blocks until a writer
appears: forever), a character device (``/dev/zero`` never ends), a socket, a directory or a
symlink loop. ``Path.read_bytes`` trusts all of them. Here every read opens with
``O_NONBLOCK`` (so opening a FIFO cannot block), checks with ``fstat`` on the *opened*
descriptor that it is a regular file (no check-then-open race), and stops at a size cap.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

__all__ = ["UnsafeFile", "read_regular_file", "file_kind", "MAX_IMAGE_BYTES", "MAX_CONFIG_BYTES"]

#: Larger image files are refused before reading (a 250 Mpx RGB PNG is ~750 MB raw but far
#: smaller compressed; 512 MiB of compressed data is beyond any real photo).
MAX_IMAGE_BYTES = 512 * 1024 * 1024
#: Config files and ``--set`` values: a real config is a few KiB.
MAX_CONFIG_BYTES = 4 * 1024 * 1024


class UnsafeFile(ValueError):
    """``path`` is not a readable regular file of acceptable size; ``reason`` says why."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def file_kind(mode: int) -> str:
    """Human name of a non-regular file type (for messages and errors.csv)."""
    for test, name in (
        (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO, named pipe"), (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISLNK, "a symlink"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop (too many levels of symbolic links)"
    if exc.errno == errno.ENOENT:
        return "file not found (or a dangling symlink)"
    if exc.errno == errno.ENXIO:
        return "not a regular file (a socket or a device without a reader)"
    if exc.errno == errno.EISDIR:
        return "not a regular file (a directory)"
    return f"cannot read file ({exc.strerror or exc})"


def read_regular_file(path: Path | str, max_bytes: int, name: str | None = None) -> bytes:
    """All bytes of regular file ``path``, or :class:`UnsafeFile` (never blocks, never reads > max_bytes).

    ``name`` is how the file is named in the error (e.g. its path relative to dataset.root).
    """
    shown = name if name is not None else str(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise UnsafeFile(shown, _os_reason(exc)) from None
    except (ValueError, TypeError) as exc:  # embedded NUL byte in the name
        raise UnsafeFile(shown, f"invalid file name ({exc})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(shown, f"not a regular file ({file_kind(st.st_mode)})")
        if st.st_size > max_bytes:
            raise UnsafeFile(shown, f"file too large ({st.st_size} bytes > {max_bytes})")
        chunks, total = [], 0
        while True:
            block = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not block:
                break
            chunks.append(block)
            total += len(block)
            if total > max_bytes:  # grew while we read it
                raise UnsafeFile(shown, f"file too large (> {max_bytes} bytes)")
        return b"".join(chunks)
    except OSError as exc:
        raise UnsafeFile(shown, _os_reason(exc)) from None
    finally:
        os.close(fd)
