"""Files written whole or not at all, and output folders one process at a time: the atomic writer of checkpoints,
exports, JSON and configs (`atomic_write`), JSON arrays streamed to disk (`JsonArrayWriter`), images under any file
name (`write_image`), what a killed save leaves (`remove_orphans`), and the `--out` lock (`lock_output`). Every
verb that writes uses them, so they sit at the bottom of the package, below the data they write."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Sequence

import cv2
import numpy as np

from posepart.errors import OutputError, PosepartError, output_folder, writing


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk; a file system that cannot is left as it is."""
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


# os.open flags: the last path component may not be a link; binary on Windows (which lacks the other two), so that
# "wb" writes bytes as given; 0o666 leaves permissions to the umask, as open() does (a group's shared folders)
_NO_LINKS = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def atomic_write(path: str | Path, write: Callable[[Any], None], check: Callable[[Path], Any] | None = None) -> Path:
    """Call write(file) on a temp file in path's folder, fsync, then os.replace it onto `path`: readers see the old or
    the complete new file, never a partial one. The one atomic writer of checkpoints, exports, JSON and configs. An
    OSError (a read-only folder, a full disk, a file where a folder should be) is an OutputError naming `path`.
    `check(temp_path)` runs on the complete file before it takes `path`'s name: a file that fails it (raises) never
    stands at `path`, and an earlier one there is kept (an export checked against PyTorch)."""
    path = Path(path)
    tmp = _temp_name(path)
    try:
        with writing(path), _open_temp(path, tmp) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if check is not None:
            check(tmp)
        with writing(path):
            os.replace(tmp, path)
    finally:
        if tmp.is_file():
            tmp.unlink()
    fsync_dir(path.parent)
    return path


def _temp_name(path: Path) -> Path:
    """Where an atomic write of `path` goes first: hidden beside it, named by this process (`remove_orphans`)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _open_temp(path: Path, tmp: Path) -> BinaryIO:
    """`tmp` opened for writing, its folder made; OSErrors are the caller's to name (`writing(path)`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if tmp.is_symlink():  # planted under the name this process would use: the link goes, not its target
        tmp.unlink()
    # O_NOFOLLOW: never write through a link (a leftover of this PID from a killed save is truncated)
    return os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _NO_LINKS, 0o666), "wb")


class JsonArrayWriter:
    """A JSON array written as its items come, into `atomic_write`'s temporary file, which takes `path`'s name at
    `close()`: memory stays flat however many items there are (the results of every frame of an hour of video), and
    readers see the complete file or none. Leaving its `with` block unclosed (an exception, or nothing to list)
    removes the temporary file, as does a `close` that fails; a process killed before `close` leaves it, with the
    items so far (`remove_orphans`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.tmp = _temp_name(self.path)
        self.items = 0
        with writing(self.path):
            self.file: BinaryIO | None = _open_temp(self.path, self.tmp)
            self.file.write(b"[")
            self.file.flush()

    def extend(self, items: Sequence[Any]) -> None:
        """Append `items` (JSON values)."""
        if not items:
            return
        data = ",".join(json.dumps(item) for item in items).encode("utf-8")  # serialised first: no partial item
        assert self.file is not None, "extend() after close()"
        with writing(self.path):
            self.file.write(b"," + data if self.items else data)
            self.file.flush()  # in the file, not this process's buffer, should the process be killed
        self.items += len(items)

    def close(self) -> Path:
        """End the array and give the file its name (fsynced, as `atomic_write`)."""
        assert self.file is not None, "close() twice"
        try:
            with writing(self.path):
                self.file.write(b"]")
                self.file.flush()
                os.fsync(self.file.fileno())
                self.file.close()
                self.file = None
                os.replace(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise
        fsync_dir(self.path.parent)
        return self.path

    def discard(self) -> None:
        """Remove the unfinished file (nothing after `close`, which renamed it)."""
        try:
            if self.file is not None:
                self.file, file = None, self.file
                file.close()  # flushes what a failed write left buffered, which can fail again: nothing to keep
        except OSError:
            pass
        finally:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> JsonArrayWriter:
        return self

    def __exit__(self, *_: Any) -> None:
        self.discard()


def write_image(path: Path, image: np.ndarray, params: Sequence[int] = ()) -> None:
    """Encode `image` (OpenCV's channel order) in the format of `path`'s suffix and write it there. Why not
    cv2.imwrite: it takes the name as UTF-8 text, and a name that is not (an archive's Latin-1 names, which Python
    reads as surrogates) crashed the process inside OpenCV (a segfault; opencv-python 5.1). Images are read through
    np.fromfile + cv2.imdecode for the same reason. `params`: cv2.imencode's (JPEG quality...); cv2.error where no
    encoder has the suffix."""
    ok, data = cv2.imencode(path.suffix, image, list(params))
    if not ok:
        raise OSError("OpenCV could not encode the image")
    with open(path, "wb") as f:
        f.write(data.tobytes())


def utf8(name: str) -> bool:
    """Whether a file name is UTF-8 text: a name whose bytes are not (Latin-1 from an old archive) is held by Python
    with surrogates, and OpenCV's video reader and writer crash the process on such a name (`write_image`)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def remove_orphans(folder: str | Path) -> list[Path]:
    """Delete the temp files `atomic_write` leaves when its process is killed mid-save (`.NAME.tmp-PID` whose PID is
    no longer running); a live process's are kept. Returns what was removed."""
    removed = []
    for tmp in Path(folder).glob(".*.tmp-*"):
        pid = tmp.name.rsplit(".tmp-", 1)[1]
        if not pid.isdigit() or not tmp.is_file():
            continue
        try:
            os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
            continue
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError):  # another user's live process, or not a PID at all
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def write_json_atomic(path: Path, data: Any, *, indent: int | None = None) -> None:
    """Write JSON so that readers see either the old or the complete new file, never a partial one. An OSError
    (read-only folder, full disk) is an OutputError naming `path` (`atomic_write`)."""
    atomic_write(path, lambda f: f.write(json.dumps(data, indent=indent).encode("utf-8")))


def read_earlier_json(path: Path) -> Any:
    """The JSON value an earlier run wrote at `path`, or None where there is none or it is not JSON (another
    program's file, a disk error): callers that reuse or replace an earlier run's outputs check its shape."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


LOCK_FILE = ".posepart.lock"


class OutputInUse(PosepartError, RuntimeError):
    """Another posepart process is writing into the output folder."""


@contextmanager
def lock_output(folder: str | Path, option: str = "--out") -> Iterator[Path]:
    """Hold an exclusive lock on `folder` (created if needed) while writing into it, so that a second posepart
    process writing there is refused (OutputInUse) instead of mixing its files in. flock, not a marker file: the
    kernel releases it when the process ends, even on kill -9, so a crash never leaves a stale lock. A folder that
    is a file or cannot be written is an OutputError naming `option`."""
    folder = output_folder(folder, option)
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        yield folder / LOCK_FILE
        return
    lock = folder / LOCK_FILE
    if lock.is_symlink() or lock.exists() and not lock.is_file():  # before: a planted link's target was truncated
        raise OutputError(f"{lock} is not a plain file (a link?): remove it, or choose another {option}")
    with writing(lock):  # O_NOFOLLOW: a link planted between the check and the open is refused, not followed
        handle = os.fdopen(os.open(lock, os.O_RDWR | os.O_CREAT | _NO_LINKS, 0o666), "a+", encoding="utf-8")
    try:
        _flock_or_refuse(handle, folder, fcntl)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield folder / LOCK_FILE
    finally:
        handle.close()  # closing the file releases the lock


def _flock_or_refuse(handle: Any, folder: Path, fcntl: Any, mode: int | None = None) -> None:
    """Take the lock (`mode`, default exclusive) on the open lock file `handle`, or raise OutputInUse naming its
    holder."""
    try:
        fcntl.flock(handle, (fcntl.LOCK_EX if mode is None else mode) | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "a process"
        raise OutputInUse(f"{folder} is being written by another posepart process ({holder}); wait for it to "
                          f"finish or choose another --out") from None


def refuse_output_in_use(folder: str | Path) -> None:
    """OutputInUse when another posepart process holds `folder`'s lock; nothing is created or kept. For a check
    before slow work (loading a model): `lock_output` takes the lock itself later, when writing starts."""
    lock = Path(folder) / LOCK_FILE
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        return
    if lock.is_symlink() or not lock.is_file():
        return  # no run holds it (lock_output refuses a planted link when it takes the lock)
    try:
        handle = os.fdopen(os.open(lock, os.O_RDONLY | _NO_LINKS), "r", encoding="utf-8")
    except OSError:  # not ours to read: lock_output names the problem when it takes the lock
        return
    with handle:  # a shared lock: it needs no write access (flock on NFS), and a holder's exclusive one refuses it
        try:
            _flock_or_refuse(handle, Path(folder), fcntl, fcntl.LOCK_SH)  # released when the file closes
        except OSError:  # a file system without flock: lock_output's own error, later (OutputInUse passes)
            return


def file_sha1(path: str | Path) -> str | None:
    """sha1 of a file's bytes (what a score was computed from: a record's digest); None when unreadable. Computed
    once per file version: a study asks for the same training and validation annotation files once per arm, and a
    COCO release's are hundreds of megabytes."""
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    return _sha1_at(str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def _sha1_at(path: str, mtime_ns: int, size: int) -> str | None:
    """sha1 of the file `path` as it is at (mtime_ns, size), the cache's key; read in chunks (a GPU run's checkpoint
    holds gigabytes; hashlib.file_digest would need Python 3.11, posepart runs on 3.10)."""
    digest = hashlib.sha1()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)  # once per process: the code it runs does not change under it
def code_digest() -> str:
    """sha1 over posepart's own source and shipped configs: another version of the code is another result (what a
    checkpoint's provenance and an evaluation's metrics record as `code`; `posepart --version` prints it)."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha1()
    for path in sorted([*package.rglob("*.py"), *package.rglob("*.yaml")]):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


# The command line of a verb run by `posepart.cli.main(argv)` from Python, which a run's provenance records instead of
# the process's sys.argv (None: the process's own command)
invoked_as: list[str] | None = None


def newer_format(found: Any, expected: str) -> str | None:
    """What to say of a model file whose format tag `found` is a later version of `expected` ("posepart-weights-v2"
    for "posepart-weights-v1": a newer posepart's file, said so with what to do); None for any other tag."""
    family = expected.rstrip("0123456789")
    version = found[len(family):] if isinstance(found, str) and found.startswith(family) else ""
    # ASCII digits, a few of them (str.isdigit takes "²", which int() refuses: a traceback from an error message)
    if not (re.fullmatch(r"[0-9]{1,6}", version) and int(version) > int(expected[len(family):])):
        return None
    return (f"written by a newer posepart (format {found!r}; this version reads {expected!r}): update posepart to "
            f"read it")
