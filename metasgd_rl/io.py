"""Atomic file writes: a temporary file in the same folder, flushed to disk, then renamed over the target.

A reader (or a run resumed after a SIGKILL) sees either the previous complete file or the new complete one,
never a partial write.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def current_umask() -> int:
    """The process's umask, read from ``/proc/self/status`` (Linux); elsewhere set and restored at once
    (``os.umask`` has no read-only form: another thread creating a file in that instant would get mode 0o666)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, with the mode a plain ``open(path, "w")`` gives: 0o666 less the
    process's umask (``tempfile.mkstemp`` alone would leave every file 0o600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.chmod(tmp, 0o666 & ~current_umask())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


#: the longest file name and path Linux file systems take, in bytes (ENAMETOOLONG beyond)
NAME_MAX = 255
PATH_MAX = 4096


def path_length_problem(path: str | os.PathLike) -> str | None:
    """Why the file system would refuse ``path`` as too long (a name over :data:`NAME_MAX` bytes, or a path over
    :data:`PATH_MAX`), or None. Checked by length alone: a missing parent would otherwise hide it until the write."""
    for part in Path(path).parts:
        size = len(os.fsencode(part))
        if size > NAME_MAX:
            shown = part if len(part) <= 40 else f"{part[:20]}...{part[-17:]}"
            return f"the name {shown!r} in it is {size} bytes long, and file systems take at most {NAME_MAX}"
    size = len(os.fsencode(os.path.abspath(path)))
    if size >= PATH_MAX:
        return f"it is {size} bytes long as an absolute path, and file systems take less than {PATH_MAX}"
    return None


def unwritable_reason(path: str | os.PathLike, directory: bool) -> str | None:
    """Why ``path`` cannot be written (``directory``: created if needed and filled with files; else a file written
    atomically, through a temporary file beside it), or None if it can as far as the file system says without writing
    anything: a name too long, a file where a directory is needed or the other way round, no write permission or a
    read-only file system on the nearest existing folder."""
    path = Path(path)
    problem = path_length_problem(path)
    if problem is not None:
        return problem
    try:
        if path.exists() and directory != path.is_dir():
            return "it is a file; use a directory" if directory else "it is a directory; use a file path"
        existing = path.absolute() if path.exists() and directory else path.absolute().parent
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            return f"{str(existing)!r} is a file, not a directory"
        if not os.access(existing, os.W_OK | os.X_OK):
            where = "it" if existing == path.absolute() else f"{str(existing)!r}"
            return f"{where} is not writable (permission denied or a read-only file system)"
    except OSError as err:
        return f"it cannot be used ({err.strerror or err})"
    return None


#: how many entries of one folder :func:`close_path` compares at most (a did-you-mean must stay cheap)
CLOSE_PATH_ENTRIES = 10_000


def close_path(path: str | os.PathLike, directory: bool) -> str | None:
    """An existing path that a missing ``path`` likely means, spelt as the user gave it (relative stays relative), or
    None: each missing component is replaced by the closest name in its folder (difflib, ignoring case), so that
    ``runs/x/fnal.pt`` gives ``runs/x/final.pt``. The last component is a folder if ``directory``, else a file. For
    a one-line "did you mean" after a typo."""
    import difflib
    from itertools import islice

    parts = Path(path).parts
    found = Path()
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if not os.path.lexists(found / part):
            try:
                with os.scandir(found) as entries:
                    names = {entry.name.lower(): entry.name for entry in islice(entries, CLOSE_PATH_ENTRIES)
                             if (entry.is_dir() if directory or not last else entry.is_file())}
            except OSError:
                return None
            close = difflib.get_close_matches(part.lower(), list(names), n=1)
            if not close:
                return None
            part = names[close[0]]
        found /= part
    wanted = found.is_dir() if directory else found.is_file()
    return os.fspath(found) if parts and wanted and found != Path(path) else None


def fsync_path(path: str | os.PathLike) -> None:
    """Push a file's (or a folder's entries') written data to disk; a missing path is left alone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
