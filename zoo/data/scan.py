"""Listing an ImageFolder without opening an image: class folders, regular files only (symlink loops, pipes,
sockets, devices and names that are not UTF-8 are skipped unopened), and the cheap checks that fail bad input
before anything slow (two classes at least, none empty, a split that gives every part an image of each)."""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from zoo.data.images import class_counts
from zoo.data.split import check_split_counts
from zoo.errors import ZooError


def is_utf8(name: str) -> bool:
    """False for a name with bytes that are not UTF-8 (os.fsdecode keeps them as lone surrogates)."""
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _kind(mode: int) -> str:
    for test, word in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device")):
        if test(mode):
            return word
    return "not a regular file"


def _list_files(root: Path) -> tuple[list[str], list[tuple[str, int, int]], list[tuple[str, str]]]:
    """(classes, [(relative path, label, size)], [(relative path, why skipped)]) for an ImageFolder tree.

    Hidden files and folders are ignored. Only regular files (or symlinks to them) are listed: broken and looping
    symlinks, named pipes, sockets and devices are skipped without being opened, and so are names that are not
    valid UTF-8 (a folder with such a name is skipped whole). Symlinked folders are followed, except one that
    leads back to a folder above it."""
    classes, skipped = [], []
    for p in sorted(root.iterdir(), key=lambda p: p.name):
        if p.name.startswith(".") or not p.is_dir():
            continue
        if is_utf8(p.name):
            classes.append(p.name)
        else:
            skipped.append((p.name + "/", "folder name is not valid UTF-8"))
    files = []
    for label, cls in enumerate(classes):
        top = root / cls
        # (folder, its path relative to root, the (device, inode) of it and every folder above it)
        stack = [(top, cls, frozenset({_inode(top.stat())}))]
        while stack:
            folder, rel_folder, above = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except OSError as exc:
                skipped.append((rel_folder + "/", f"cannot list the folder: {exc.strerror or exc}"))
                continue
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                rel = f"{rel_folder}/{entry.name}"
                if not is_utf8(entry.name):
                    skipped.append((rel, "name is not valid UTF-8"))
                    continue
                try:
                    info = entry.stat()  # follows symlinks
                except OSError as exc:
                    skipped.append((rel, _stat_problem(exc, entry.is_symlink())))
                    continue
                if stat.S_ISDIR(info.st_mode):
                    if _inode(info) in above:
                        skipped.append((rel + "/", "symlink loop: it leads back to a folder above it"))
                    else:
                        stack.append((Path(entry.path), rel, above | {_inode(info)}))
                elif stat.S_ISREG(info.st_mode):
                    files.append((rel, label, info.st_size))
                else:
                    skipped.append((rel, f"{_kind(info.st_mode)}, not a regular file"))
    files.sort(key=lambda f: f[0])
    skipped.sort()
    return classes, files, skipped


def _inode(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def _stat_problem(exc: OSError, is_link: bool) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if is_link and exc.errno == errno.ENOENT:
        return "broken symlink: its target does not exist"
    return exc.strerror or type(exc).__name__


def open_regular(path: Path):
    """``path`` opened for binary reading, only when it is a regular file (or a symlink to one): a named pipe is
    opened without blocking and refused, so no read ever waits for a writer that never comes."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise OSError(_stat_problem(exc, os.path.islink(path))) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(f"{_kind(mode)}, not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_classes(root: Path, classes: list[str], counts: dict[str, int], *, after_skip: bool = False) -> None:
    if len(classes) < 2:
        found = f"only '{classes[0]}'" if classes else "none"
        raise ZooError(f"Data directory '{root}' needs at least two class sub-folders (found {found}); "
                       f"put each class's images in its own folder, e.g. {root}/cat and {root}/dog.")
    empty = [c for c in classes if counts.get(c, 0) == 0]
    if empty:
        what = "has no readable images" if after_skip else "is empty"
        raise ZooError(f"Class folder '{empty[0]}' in '{root}' {what}"
                       f"{' (also: ' + ', '.join(empty[1:]) + ')' if len(empty) > 1 else ''}; "
                       f"add images to it or remove it.")


@dataclass(frozen=True)
class Scan:
    """An ImageFolder listed and checked, nothing decoded: its classes and (relative path, label, bytes) files."""

    root: Path
    classes: list[str]
    files: list[tuple[str, int, int]]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # never opened: see _list_files


def scan_images(root: Path, *, split: Optional[tuple] = (8, 1, 1)) -> Scan:
    """List ``root`` (one sub-folder per class) and check the class folders, their counts and ``split`` without
    opening an image: cheap, so bad input fails before anything slow."""
    root = Path(root)
    if not root.is_dir():
        raise ZooError(f"Data directory '{root}' does not exist; pass a folder with one sub-folder per class.")
    classes, files, skipped = _list_files(root)
    counts = class_counts(classes, (label for _, label, _ in files))
    check_classes(root, classes, counts)
    check_split_counts(counts, split)
    return Scan(root, classes, files, skipped)
