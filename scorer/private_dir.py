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
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


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
