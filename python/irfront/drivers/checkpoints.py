"""Where a durable stream keeps its reducer checkpoints: a small store of pickled values
under string keys.

    store = DirectoryStore("/var/lib/mystream")       # the filesystem default
    store.save("job/reducers/Sum/0/000000000011", record)
    store.load("job/reducers/Sum/0/000000000011")
    store.list("job/reducers/")                       # sorted keys under a prefix
    store.delete("job/reducers/Sum/0/000000000011")

A key is ``/``-separated segments of letters, digits, ``.``, ``_`` and ``-`` (no empty
segment, none starting with ``.``). ``CheckpointStore`` is the interface: another
backend (an object store, a database) implements ``save``/``load``/``list``/``delete``
(and, if it can leave debris behind, ``cleanup``). A ``save`` must be atomic: a reader
sees the old value or the new one, never part of one.

``DirectoryStore`` writes each value to a temporary file in the key's directory, flushes
and fsyncs it, then ``os.replace``s it onto ``<key>.ckpt`` (atomic on POSIX filesystems)
and fsyncs the directory. A writer killed mid-write leaves only a ``*.tmp`` file, which
``cleanup()`` removes. Values are pickled with Ray's cloudpickle (states may hold
classes or functions defined in ``__main__``).
"""
from __future__ import annotations

import abc
import os
import re
import tempfile
from typing import Any

from ray import cloudpickle

__all__ = ["CheckpointStore", "DirectoryStore", "check_key"]

_SEGMENT = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*\Z")
SUFFIX = ".ckpt"
TMP_SUFFIX = ".tmp"


def check_key(key: str) -> str:
    """``key`` if it is a valid store key; a ValueError saying why otherwise."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"a checkpoint key must be a non-empty string; got {key!r}")
    for seg in key.split("/"):
        if not _SEGMENT.match(seg):
            raise ValueError(f"checkpoint key {key!r}: segment {seg!r} must be letters, "
                             "digits, '.', '_' or '-', not empty and not starting with '.'")
    return key


class CheckpointStore(abc.ABC):
    """Pickled values under string keys (see the module's docstring)."""

    @abc.abstractmethod
    def save(self, key: str, value: Any) -> None:
        """Stores ``value`` under ``key``, atomically (replacing any older value)."""

    @abc.abstractmethod
    def load(self, key: str) -> Any:
        """The value under ``key``; KeyError when there is none."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Every key starting with ``prefix``, sorted."""

    @abc.abstractmethod
    def delete(self, key: str) -> bool:
        """Removes ``key``; False when it was not there."""

    def cleanup(self) -> int:
        """Removes what interrupted writes left behind; returns how many items."""
        return 0


class DirectoryStore(CheckpointStore):
    """A ``CheckpointStore`` in a directory of the local (or a shared) filesystem: one
    file per key, ``<path>/<key>.ckpt``, written atomically (temp file + ``os.replace``).
    """

    def __init__(self, path: str | os.PathLike, *, create: bool = True):
        self.path = os.path.abspath(os.fspath(path))
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise ValueError(f"DirectoryStore: {self.path!r} exists and is not a "
                             "directory; give a directory (it is created if missing)")
        if not os.path.isdir(self.path):
            if not create:
                raise ValueError(f"DirectoryStore: no directory {self.path!r} (create=False)")
            try:
                os.makedirs(self.path, exist_ok=True)
            except OSError as e:
                raise ValueError(f"DirectoryStore: cannot create the checkpoint directory "
                                 f"{self.path!r}: {e.strerror or e}") from e
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise ValueError(f"DirectoryStore: the checkpoint directory {self.path!r} is "
                             "not writable by this process")

    def __repr__(self) -> str:
        return f"DirectoryStore({self.path!r})"

    def _file(self, key: str) -> str:
        return os.path.join(self.path, *check_key(key).split("/")) + SUFFIX

    def save(self, key: str, value: Any) -> None:
        target = self._file(key)
        folder = os.path.dirname(target)
        os.makedirs(folder, exist_ok=True)
        data = cloudpickle.dumps(value)
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(target) + ".",
                                   suffix=TMP_SUFFIX, dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        _fsync_dir(folder)

    def load(self, key: str) -> Any:
        try:
            with open(self._file(key), "rb") as f:
                return cloudpickle.loads(f.read())
        except FileNotFoundError:
            raise KeyError(key) from None

    def list(self, prefix: str = "") -> list[str]:
        out = []
        for dirpath, dirnames, files in os.walk(self.path):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = os.path.relpath(dirpath, self.path)
            base = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            for f in files:
                if f.endswith(SUFFIX) and not f.startswith("."):
                    key = base + f[:-len(SUFFIX)]
                    if key.startswith(prefix):
                        out.append(key)
        return sorted(out)

    def delete(self, key: str) -> bool:
        try:
            os.unlink(self._file(key))
        except FileNotFoundError:
            return False
        return True

    def cleanup(self) -> int:
        """Removes the temp files of writes that were cut short (``.*.tmp``) and empty
        key directories; returns how many temp files went."""
        n = 0
        for dirpath, _, files in os.walk(self.path, topdown=False):
            for f in files:
                if f.startswith(".") and f.endswith(TMP_SUFFIX):
                    try:
                        os.unlink(os.path.join(dirpath, f))
                        n += 1
                    except FileNotFoundError:
                        pass
            if dirpath != self.path:
                try:
                    os.rmdir(dirpath)  # only if empty
                except OSError:
                    pass
        return n


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
