"""The one way oqatnets writes outputs: aside, then swapped in whole; and sha256 checks.

A file is written to a temporary sibling and renamed over the target (``os.replace``), so a
reader sees the old file or the new one, never half of one; a folder is written to a temporary
sibling folder and swapped in the same way (the old folder is kept until the new one is in
place). Targets that are not regular files or folders (a device, a FIFO, a socket) are refused, and
so is a symlink: nothing is written through a link (the folders above the target may be links).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import ChecksumError, UnsafeOutputError

__all__ = ['atomic_path', 'atomic_dir', 'write_text', 'write_json', 'sha256_file',
           'verify_sha256', 'check_output', 'occupied']

_DEFAULT_FILE_MODE = 0o644


def check_output(path: 'str | os.PathLike', *, folder: bool = False, overwrite: bool = True) -> Path:
    """``path`` as a :class:`~pathlib.Path`, after refusing what must not be written: a symlink, a target
    that is not a regular file (or a folder when ``folder``), a parent that is a file, and an existing
    target unless ``overwrite``; all with :class:`UnsafeOutputError`.
    """
    path = Path(path)
    if path.is_symlink():
        raise UnsafeOutputError(f'{path} is a symlink to {os.readlink(path)}; outputs are never written through a '
                                f'link: pass the path it points to, or another path')
    if os.path.lexists(path):
        mode = os.lstat(path).st_mode
        ok = stat.S_ISDIR(mode) if folder else stat.S_ISREG(mode)
        if not ok:
            want = 'a folder' if folder else 'a regular file'
            raise UnsafeOutputError(f'{path} is {_kind(path)}; the output must be {want} path that may be replaced')
        if folder:
            _check_replaceable_folder(path)
        if not overwrite and occupied(path, folder=folder):
            raise UnsafeOutputError(f'{path} already exists; choose another path or allow overwriting')
    else:
        parent = next(p for p in path.absolute().parents if os.path.lexists(p))
        if not parent.is_dir():
            raise UnsafeOutputError(f'{path}: {parent} is {_kind(parent)}, not a folder; choose another output path')
    return path


def _check_replaceable_folder(path: Path) -> None:
    """Refuse a folder that cannot be swapped out whole: the working folder or one holding it, a mount point."""
    resolved, cwd = path.resolve(), Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise UnsafeOutputError(f'{path} is the current folder{"" if resolved == cwd else " or holds it"}; an output '
                                'folder is replaced whole, so name a folder of its own, e.g. ./out')
    if os.path.ismount(resolved):
        raise UnsafeOutputError(f'{path} is a mount point; an output folder is replaced whole, so name a folder '
                                'inside it')


def _kind(path: Path) -> str:
    """What ``path`` (which exists, perhaps as a dangling link) is, for a message: a folder, a file, a link …"""
    if path.is_symlink():
        return f'a symlink to {os.readlink(path)}' + ('' if path.exists() else ', which does not exist')
    mode = os.lstat(path).st_mode
    return 'a folder' if stat.S_ISDIR(mode) else 'a file' if stat.S_ISREG(mode) else 'not a regular file'


def occupied(path: Path, *, folder: bool = False) -> bool:
    """Whether writing ``path`` would replace something: an existing file, or a folder with anything in it."""
    return os.path.lexists(path) and not (folder and path.is_dir() and not any(path.iterdir()))


def _file_mode() -> int:
    # Files are published with the usual permissions; reading the umask would have to change it.
    return _DEFAULT_FILE_MODE


@contextlib.contextmanager
def _made_parents(folder: Path) -> Iterator[None]:
    """Create ``folder`` with its missing parents; if the block fails, remove the ones made here (while empty),
    so that a refused or failed write leaves no trace."""
    missing = []
    while not os.path.lexists(folder):
        missing.append(folder)
        folder = folder.parent
    for made in reversed(missing):
        made.mkdir()
    try:
        yield
    except BaseException:
        for made in missing:  # innermost first
            try:
                made.rmdir()
            except OSError:  # something else was written there meanwhile: keep it
                break
        raise


@contextlib.contextmanager
def atomic_path(path: 'str | os.PathLike') -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on failure it is removed."""
    path = check_output(path)
    with _made_parents(path.parent):
        fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
        os.close(fd)
        try:
            yield Path(tmp)
            os.chmod(tmp, _file_mode())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _set_aside(path: Path) -> Path:
    """Move the folder ``path`` into a new hidden folder beside it (returned); if it cannot move, nothing is left."""
    old = Path(tempfile.mkdtemp(prefix=f'.{path.name}.', suffix='.old', dir=path.parent))
    try:
        os.replace(path, old / path.name)
    except BaseException:
        old.rmdir()
        raise
    return old


@contextlib.contextmanager
def atomic_dir(path: 'str | os.PathLike') -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it replaces ``path`` whole.

    The previous folder (if any) is renamed aside, the new one renamed in, then the old one
    deleted; on failure the temporary folder is removed and ``path`` is untouched.
    """
    path = check_output(path, folder=True)
    with _made_parents(path.parent):
        tmp = Path(tempfile.mkdtemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent))
        try:
            yield tmp
            os.chmod(tmp, 0o755)
            if path.exists():
                old = _set_aside(path)
                try:
                    os.replace(tmp, path)
                except BaseException:
                    os.replace(old / path.name, path)
                    raise
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def replacing_dir(path: 'str | os.PathLike') -> Iterator[Path]:
    """Yield ``path`` as a new empty folder for a long job that writes in place; a folder already
    there is kept aside, deleted when the job succeeds and put back when it fails.

    For outputs that record their own paths (a training run's files), which :func:`atomic_dir`'s
    temporary name would break. A failed job leaves ``path`` as it was.
    """
    path = check_output(path, folder=True)
    with _made_parents(path.parent):
        old = None
        if path.exists():
            old = _set_aside(path)
        try:
            path.mkdir()
            yield path
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            if old is not None:
                os.replace(old / path.name, path)
                old.rmdir()
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def write_text(path: 'str | os.PathLike', text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding='utf-8')
    return Path(path)


def write_json(path: 'str | os.PathLike', data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    return write_text(path, json.dumps(data, indent=2, default=str) + '\n')


def sha256_file(path: 'str | os.PathLike') -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: 'str | os.PathLike', expected: str | None, *, recorded_by: str = 'the registry',
                  remedy: str = 'delete it from the Hub cache and download it again') -> None:
    """Raise :class:`ChecksumError` if ``expected`` is given and ``path`` does not hash to it; the message names
    who recorded the hash and what to do."""
    if not expected:
        return
    actual = sha256_file(path)
    if actual != expected.lower():
        raise ChecksumError(f'sha256 of {path} is {actual}, {recorded_by} expects {expected}: the file is corrupt or '
                            f'not the one saved with it; {remedy}')
