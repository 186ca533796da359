"""The write-beside-then-rename output: a directory or file staged beside its final place, renamed
into it when complete, locked against a second writer, removed on every error and catchable signal;
and the checks of an output path made before any work (existing, overlapping an input, unwritable).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import threading
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any, Sequence

from mote_convert.errors import (
    Interrupted,
    MoteError,
    OutputExistsError,
    OutputWriteError,
    describe_os_error,
    write_error,
)


class StagedOutput:
    """A directory (or, with ``directory=False``, one file) written beside its final place and renamed
    into it only when complete.

    Use as a context manager. While it is open:

    * a lock file ``.NAME.mote-lock`` beside the output is held (``flock``): a second run writing the
      same output fails at once with :class:`OutputExistsError`, before doing any work;
    * staging directories of the same output left by a killed run (``.NAME.partial-*``; the lock
      proves their writer is dead) are removed first, and an old output that a killed ``--overwrite``
      had set aside (``.NAME.old-*``) is put back if nothing replaced it;
    * SIGTERM and SIGHUP, like SIGINT, raise :class:`Interrupted` in the main thread, so the staging
      directory is removed on every catchable stop.

    On success the staging directory replaces ``final`` (an existing ``final`` only with
    ``overwrite``); on any error it is removed and ``final`` is untouched. An ``OSError`` raised
    inside the block (the output's writes) leaves as :class:`OutputWriteError` naming the final path;
    a cleanup that fails is reported, never ignored.
    """

    def __init__(
        self,
        final: str | Path,
        *,
        overwrite: bool = False,
        protect: Sequence[Path] = (),
        mode: int = 0o777,
        directory: bool = True,
    ) -> None:
        self.final = Path(final).absolute()
        self.directory = directory  # False: a single file, which the caller creates at the returned path
        self.overwrite = overwrite
        self.protect = tuple(protect)
        self.mode = mode
        check_output_path(self.final, overwrite=overwrite, protect=protect, directory=directory)
        self.lock_path = self.final.parent / f".{self.final.name}.mote-lock"
        self.path = self.final.parent / f".{self.final.name}.partial-{uuid.uuid4().hex[:8]}"
        self._lock: int | None = None
        self._signals = InterruptSignals()

    def __enter__(self) -> Path:
        try:
            self.final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(self.final.parent, exc, "create the directory of the") from None
        self._lock = acquire_lock(self.lock_path, self.final)
        try:
            self._remove_stale()
            check_output_path(
                self.final, overwrite=self.overwrite, protect=self.protect, directory=self.directory
            )  # again, under the lock
            if self.directory:
                try:
                    self.path.mkdir(mode=self.mode)
                except OSError as exc:
                    raise write_error(self.final, exc, "create the staging directory of the") from None
            self._signals.__enter__()
        except BaseException:
            self._unlock()
            raise
        return self.path

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._signals.received is not None and not isinstance(exc, Interrupted):
                # a signal arrived: whatever else happened since (an error it caused inside a C
                # extension, or nothing yet), the run stops here, as interrupted
                interrupted = Interrupted(self._signals.received)
                self._discard(interrupted)
                raise interrupted from None
            if exc_type is None:
                self._signals.hold()  # two renames: a signal between them must not leave a half state
                try:
                    self._commit()
                except BaseException as error:
                    self._discard(error)
                    raise self._translate(error) from None
                return
            self._discard(exc)
            translated = self._translate(exc)  # type: ignore[arg-type]
            if translated is not exc:
                raise translated from None
        finally:
            self._signals.__exit__(None, None, None)
            self._unlock()

    def _translate(self, exc: BaseException) -> BaseException:
        """An OSError from inside the block becomes an OutputWriteError naming the final path."""
        if isinstance(exc, OSError) and not isinstance(exc, MoteError):
            where = self._display(exc.filename) if isinstance(exc.filename, (str, bytes, os.PathLike)) else self.final
            return write_error(where, exc)
        return exc

    def _display(self, filename: object) -> Path:
        """A path inside the staging directory, as it will be called under the final one."""
        path = Path(os.fsdecode(filename))  # type: ignore[arg-type]
        try:
            return self.final / path.relative_to(self.path)
        except ValueError:
            return path

    def _discard(self, exc: BaseException | None) -> None:
        """Remove the staging directory after an error; a failure to do so is added to the report."""
        try:
            _remove_tree(self.path)
        except OSError as cleanup:
            note = f"; the staging directory {self.path} could not be removed ({describe_os_error(cleanup)})"
            if isinstance(exc, MoteError) and exc.args:
                exc.args = (f"{exc.args[0]}{note}",) + exc.args[1:]

    def _commit(self) -> None:
        if not os.path.lexists(self.final):
            os.replace(self.path, self.final)
            return
        if not self.overwrite:  # appeared while we were writing
            raise OutputExistsError(f"{self.final} already exists (use --overwrite to replace it)")
        trash = self.final.parent / f".{self.final.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(self.final, trash)
        os.replace(self.path, self.final)
        try:
            _remove_tree(trash)
        except OSError as exc:
            raise OutputWriteError(
                f"{self.final} was written, but the output it replaced could not be removed from {trash} "
                f"({describe_os_error(exc)})"
            ) from None

    def _remove_stale(self) -> None:
        """Remove what killed runs of this output left (we hold the lock, so their writers are dead)."""
        pattern = f".{self.final.name}."
        for entry in sorted(self.final.parent.iterdir()) if self.final.parent.is_dir() else ():
            rest = entry.name[len(pattern) :] if entry.name.startswith(pattern) else ""
            if rest.startswith("old-") and not os.path.lexists(self.final):
                os.replace(entry, self.final)  # a killed --overwrite had set the old output aside: put it back
            elif rest.startswith(("partial-", "old-")):
                try:
                    _remove_tree(entry)
                except OSError as exc:
                    raise OutputWriteError(
                        f"{entry}: cannot remove a killed run's leftovers ({describe_os_error(exc)})"
                    ) from None

    def _unlock(self) -> None:
        if self._lock is not None:
            release_lock(self._lock, self.lock_path)
            self._lock = None


def _remove_tree(path: Path) -> None:
    """Remove a directory tree, a file or a symlink; a missing path is fine, any other failure raises."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def acquire_lock(path: Path, final: Path) -> int:
    """Hold an exclusive flock on ``path``; another holder means another run is writing ``final``."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise write_error(path, exc, "create the lock file of the") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OutputExistsError(f"{final}: another mote-convert run is writing this output right now") from None
        # The previous holder unlinks the file when it is done: if it did so between our open and our
        # flock, we hold a lock on a file nobody else can find. Start over on the current one.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)


def release_lock(fd: int, path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)


class InterruptSignals:
    """While active (main thread only), SIGINT, SIGTERM and SIGHUP are recorded, not acted on at
    once: :func:`check_interrupted` raises :class:`Interrupted` at the next safe point (the writer
    checks before every tensor), and the staged output's exit checks too. Raising from the handler
    itself could land inside a C extension's callback (safetensors' reader turned it into a
    ValueError); a recorded signal is acted on within one tensor's work. Previous handlers are
    restored on exit."""

    SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}
        self.received: int | None = None
        self._held = False

    def hold(self) -> None:
        """Ignore the signals from now on (for a short critical section that must finish)."""
        self._held = True

    def _handler(self, signum: int, frame: Any) -> None:
        if self.received is None and not self._held:
            self.received = signum

    def check(self) -> None:
        """Raise :class:`Interrupted` if a signal arrived (once)."""
        if self.received is not None and not self._held:
            self._held = True
            raise Interrupted(self.received)

    def __enter__(self) -> InterruptSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handler)
            _ACTIVE.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        if self in _ACTIVE:
            _ACTIVE.remove(self)


_ACTIVE: list[InterruptSignals] = []


def check_interrupted() -> None:
    """A safe point of a long write: raise :class:`Interrupted` if a stopping signal arrived."""
    for active in _ACTIVE:
        active.check()


def check_output_path(final: Path, *, overwrite: bool, protect: Sequence[Path] = (), directory: bool = True) -> None:
    """Refuse an existing output (a dangling symlink included) without ``overwrite``, any output that
    overlaps an input, a file output where a directory is (``--overwrite`` would delete the
    directory), and a place that cannot be written (a parent that is a file, a read-only directory)."""
    final = Path(final)
    resolved = final.resolve()
    for src in protect:
        src = Path(src).resolve()
        if resolved == src or src.is_relative_to(resolved) or resolved.is_relative_to(src):
            raise OutputExistsError(f"output {final} overlaps the input {src}; choose another output path")
    if os.path.lexists(final) and not overwrite:
        kind = " (a symbolic link)" if os.path.islink(final) else ""
        raise OutputExistsError(f"{final} already exists{kind}; use --overwrite to replace it")
    if not directory and final.is_dir() and not final.is_symlink():
        raise OutputExistsError(f"{final} is a directory; the output is a file (choose a file name)")
    check_writable(final.parent)


def check_writable(directory: Path) -> None:
    """Refuse, before any work, a directory that cannot take a new entry: the nearest existing
    ancestor must be a directory in which a file can be created (tried, then removed: permission
    bits do not tell for root or read-only mounts)."""
    place = Path(directory).absolute()
    while not os.path.lexists(place) and place != place.parent:
        place = place.parent
    if not place.is_dir():
        raise OutputWriteError(f"{place}: cannot write output there (not a directory)")
    probe = place / f".mote-write-probe-{uuid.uuid4().hex[:8]}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        raise write_error(place, exc, "create entries in the directory of the") from None
    try:
        os.unlink(probe)
    except OSError as exc:
        raise write_error(probe, exc, "remove the write probe in the directory of the") from None
