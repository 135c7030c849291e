"""Files that appear under their final name only when complete, readable as a plain ``open()``
would make them. Below every module that writes (the file layer, references, exports, caches).

Temporary names are short and exact: ``.{prefix}-{tag}.{random}.part{suffix}`` beside the final
path, where ``prefix`` is at most :data:`PREFIX_CHARS` safe characters of the final name's stem
(for a person reading a folder) and ``tag`` a hash of the whole final name. So

* a temporary name never passes 255 bytes, whatever the final name's length (a legal 244-byte
  output name is written, not refused after its frame was computed);
* the leftovers of one output never match another's (``cam.mp4`` and ``cam.1.mp4``, ``a.png`` and
  ``a.b.png``, a stem with ``[`` or ``*``): :func:`stale_parts` matches the tag exactly.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

#: Characters of the final stem kept, for people, in a temporary name.
PREFIX_CHARS = 24
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def umask() -> int:
    """The process's umask (read without changing it for good)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_readable(path: str | Path) -> Path:
    """Give ``path`` the mode a plain ``open()`` would (0666 less the umask).

    ``mkstemp``, ``TemporaryDirectory`` and some libraries' writers make files 0600: a model
    folder, an ONNX export or a shared cache would then be unreadable to other users beside
    0644 files."""
    path = Path(path)
    os.chmod(path, 0o666 & ~umask())
    return path


def part_stem(path: Path) -> str:
    """``.{prefix}-{tag}``: what every temporary name of ``path`` starts with (see the module)."""
    name = Path(path).name
    prefix = _UNSAFE.sub("_", Path(name).stem)[:PREFIX_CHARS]
    tag = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return f".{prefix}-{tag}"


def temporary_beside(path: Path, suffix: str) -> tuple[int, Path]:
    """A new temporary file beside ``path`` (``.{prefix}-{tag}.XXXX{suffix}``), open, with the
    mode a plain ``open()`` would give."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{part_stem(path)}.", suffix=suffix, dir=path.parent)
    os.fchmod(fd, 0o666 & ~umask())
    return fd, Path(tmp)


def temporary_file(path: Path) -> Path:
    """A closed temporary file for ``path`` (``...part{suffix}``), to write and then rename."""
    fd, tmp = temporary_beside(path, f".part{Path(path).suffix}")
    os.close(fd)
    return tmp


def temporary_folder(path: Path) -> Path:
    """A new empty temporary folder beside ``path`` (``...part``), 0777 less the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{part_stem(path)}.", suffix=".part", dir=path.parent))
    os.chmod(folder, 0o777 & ~umask())
    return folder


def stale_parts(path: Path) -> list[Path]:
    """Temporary files and folders that an interrupted write of exactly ``path`` left beside it."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    start = part_stem(path) + "."
    return [p for p in path.parent.iterdir() if p.name.startswith(start) and ".part" in p.name[len(start):]]


def remove_paths(paths: list[Path]) -> None:
    """Delete files and folders (a folder with what it holds); gone already is fine."""
    for stale in paths:
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def replace_folder(new: Path, final: Path) -> None:
    """Put the finished folder (or file) ``new`` at ``final``, replacing what was there as one
    rename: the old folder or file is moved aside first and deleted after, so no old file survives
    beside new ones and nothing is left under a temporary name."""
    final = Path(final)
    if final.exists() or final.is_symlink():
        aside = temporary_folder(final)
        aside.rmdir()
        os.replace(final, aside)
        try:
            os.replace(new, final)
        except BaseException:
            os.replace(aside, final)
            raise
        remove_paths([aside])  # a file moved aside too: rmtree alone left it as a stray .part
    else:
        os.replace(new, final)
