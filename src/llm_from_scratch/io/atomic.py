"""Writing files whole or not at all.

A program that is killed (Ctrl-C, out of memory, a full disk) while it writes ``best_model.pt``
leaves half a file, and the next run trusts it. The cure is old and simple: write to a temporary
file in the same folder, flush it to the disk, then *rename* it over the target. A rename within
one file system is atomic: readers see the old file or the new one, never a mix. If anything
fails before the rename, the temporary file is deleted and the old file is untouched.

One helper does this, :func:`atomic_path`; the others are shortcuts built on it::

    with atomic_path("model.safetensors") as tmp:   # any library that writes to a path
        save_file(tensors, str(tmp))
    write_atomically(path, data)                     # bytes
    write_json_atomically(path, {"step": 10})        # JSON
    with atomic_paths(train, validation) as (t, v):  # several files that belong together
        ...                                          # both appear only if all went well
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path, *, sync: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed to ``path``.

    The caller writes the temporary file any way it likes (``open``, ``torch.save``,
    safetensors...). When the ``with`` block ends without an exception the file is flushed to the
    disk (``sync``) and renamed over ``path``; otherwise it is deleted and ``path`` keeps its old
    content. The folder is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        if sync:
            with open(temporary, "rb+") as file:  # a writable handle: Windows cannot fsync a read-only one
                os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)  # only still there if something failed


@contextlib.contextmanager
def atomic_paths(*paths: str | Path) -> Iterator[list[Path]]:
    """:func:`atomic_path` for several files: all are renamed into place only if the block succeeds."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(atomic_path(path)) for path in paths]


def write_atomically(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file: readers never see half a file."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def write_json_atomically(path: str | Path, value: Any, *, indent: int = 2) -> None:
    """``value`` as UTF-8 JSON (non-ASCII kept as is, newline at the end), written atomically."""
    text = json.dumps(value, indent=indent, ensure_ascii=False) + "\n"
    write_atomically(path, text.encode("utf-8"))
