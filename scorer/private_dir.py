"""A directory only this process's user can change, for files the scorer later imports.

:func:`private_dir` creates the directory (mode 0700) when it is missing and then refuses it,
with one line naming the path and the problem, unless

- the directory itself is a real directory (``lstat``: not a symlink), owned by the process's
  effective uid and not writable by group or others;
- every directory above it is owned by root or by that uid, and is either not writable by group
  or others or has the sticky bit (``/tmp`` is fine: nobody else can rename or replace an entry
  in it they do not own).

Then nobody but this user (and root) can add, change, rename or replace anything in it, so what
the process checks in it stays true until it reads it.

:func:`download_dir` makes a new private temporary folder for a download of this process (a registry
model, an object-store bundle), removed by :func:`remove_download` once its version is no longer used,
or at exit by the process that made it (a forked worker inherits the exit handler, not the folders).
"""

from __future__ import annotations

import atexit
import os
import shutil
import stat
import tempfile
from pathlib import Path

_downloads: dict[Path, int] = {}  # every download folder of this process -> the pid that made it


@atexit.register
def _remove_downloads() -> None:
    """At exit, the downloads this process made and nobody removed (a server's last version)."""
    for workdir, pid in list(_downloads.items()):
        if pid == os.getpid():
            shutil.rmtree(workdir, ignore_errors=True)


def download_dir(prefix: str) -> Path:
    """A new temporary folder, mode 0700 (``mkdtemp``): ours alone."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    _downloads[workdir] = os.getpid()
    return workdir


def remove_download(workdir: Path) -> None:
    """Remove a folder of :func:`download_dir` (once its version is no longer used)."""
    shutil.rmtree(workdir, ignore_errors=True)
    _downloads.pop(workdir, None)


class UnsafeDirectory(Exception):
    """The directory could be changed by someone else; the message names it and why."""


def private_dir(path: Path) -> Path:
    """``path`` with its parent's symlinks resolved (a symlink above it, even a safe one, could be
    changed by whoever owns it: use the returned path), created 0700 if missing, once it is safe
    as described above."""
    uid = os.geteuid()
    parent = Path(os.path.abspath(path)).parent.resolve()
    path = parent / Path(os.path.abspath(path)).name
    parent.mkdir(parents=True, exist_ok=True)
    for ancestor in (parent, *parent.parents):
        st = ancestor.stat()
        if st.st_uid not in (0, uid):
            raise UnsafeDirectory(f"{path}: its parent {ancestor} is owned by uid {st.st_uid}, not root or {uid}")
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            raise UnsafeDirectory(
                f"{path}: its parent {ancestor} is writable by group or others without the sticky bit "
                f"(mode {stat.S_IMODE(st.st_mode):04o})"
            )
    try:
        os.mkdir(path, 0o700)
        os.chmod(path, 0o700)  # ours and new (mkdir fails on anything already there): the umask aside
    except FileExistsError:
        pass
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeDirectory(f"{path} is a symlink; give the real directory")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeDirectory(f"{path} is not a directory")
    if st.st_uid != uid:
        raise UnsafeDirectory(f"{path} is owned by uid {st.st_uid}, not by this process's uid {uid}")
    if st.st_mode & 0o022:
        raise UnsafeDirectory(f"{path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})")
    return path
