"""Size-capped safetensors shards written by streaming, and the write-beside-then-rename output.

safetensors can only save tensors it holds in memory all at once. Since a conversion plan knows
every output tensor's name, dtype and shape before any data exists, each shard's header is written
from the plan first and the tensor bytes are streamed in after it, one tensor at a time: peak memory
is a few tensors, whatever the shard or model size. The files are ordinary safetensors files that
``safe_open`` and ``from_pretrained`` read.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import struct
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterable, Iterator, Mapping, Sequence

from mote_convert.errors import (
    InternalError,
    Interrupted,
    MoteError,
    OutputExistsError,
    OutputWriteError,
    describe_os_error,
    write_error,
)
from mote_convert.io.dtypes import itemsize, safetensors_dtype
from mote_convert.io.index import INDEX_FILE, SINGLE_FILE
from mote_convert.io.reader import TensorReader, write_all

if TYPE_CHECKING:
    import torch

ProgressFn = Callable[[int], None]  # called with the bytes just written

HEADER_ALIGNMENT = 8  # safetensors pads its JSON header with spaces to a multiple of 8 bytes


@dataclass(frozen=True)
class TensorSpec:
    """An output tensor as its header entry states it."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        """Bytes of tensor data."""
        n = itemsize(self.dtype)
        for dim in self.shape:
            n *= dim
        return n


@dataclass(frozen=True)
class Shard:
    """One output file and the tensors it holds, in write order."""

    file: str
    tensors: tuple[TensorSpec, ...]

    @property
    def nbytes(self) -> int:
        """Bytes of tensor data in this shard."""
        return sum(t.nbytes for t in self.tensors)


def plan_shards(tensors: Sequence[TensorSpec], max_shard_size: int) -> tuple[Shard, ...]:
    """Split tensors, in order, into shards of at most ``max_shard_size`` data bytes.

    As in transformers, a tensor larger than the cap gets a shard of its own. One shard is named
    ``model.safetensors``; several are ``model-0000i-of-0000N.safetensors``.
    """
    groups: list[list[TensorSpec]] = []
    size = 0
    for spec in tensors:
        if not groups or (size + spec.nbytes > max_shard_size and groups[-1]):
            groups.append([])
            size = 0
        groups[-1].append(spec)
        size += spec.nbytes
    if not groups:
        groups = [[]]
    if len(groups) == 1:
        return (Shard(SINGLE_FILE, tuple(groups[0])),)
    n = len(groups)
    return tuple(Shard(f"model-{i + 1:05d}-of-{n:05d}.safetensors", tuple(g)) for i, g in enumerate(groups))


def encode_header(tensors: Iterable[TensorSpec], metadata: Mapping[str, str]) -> bytes:
    """The 8-byte length prefix plus the padded JSON header of a safetensors file."""
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for spec in tensors:
        header[spec.name] = {"dtype": spec.dtype, "shape": list(spec.shape), "data_offsets": [offset, offset + spec.nbytes]}
        offset += spec.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % HEADER_ALIGNMENT)
    return struct.pack("<Q", len(raw)) + raw


class ShardWriter:
    """Write one safetensors file whose header is known up front; tensors must come in order."""

    def __init__(self, path: Path, shard: Shard, metadata: Mapping[str, str], mode: int = 0o666) -> None:
        self.path = path
        self.shard = shard
        self._next = 0
        # Unbuffered: tensor data goes out in large writes anyway, and byte-range copies from a
        # source file advance this file's offset in the kernel, which a buffer would not see.
        # Created with ``mode`` (narrowed by the umask): never wider than the source's files.
        self._fh: BinaryIO = open(create_file(path, mode), "wb", buffering=0, closefd=True)
        write_all(self._fh, encode_header(shard.tensors, metadata))

    def _next_spec(self, name: str) -> TensorSpec:
        if self._next >= len(self.shard.tensors):
            raise InternalError(f"{self.path.name} got an extra tensor {name}")
        spec = self.shard.tensors[self._next]
        if spec.name != name:
            raise InternalError(f"{self.path.name} expected {spec.name}, got {name}")
        return spec

    def write(self, name: str, tensor: torch.Tensor) -> int:
        """Append tensor ``name``'s bytes; it must be the next one in the header, with its dtype and shape."""
        spec = self._next_spec(name)
        if safetensors_dtype(tensor.dtype) != spec.dtype or tuple(tensor.shape) != spec.shape:
            raise InternalError(
                f"{name} is {safetensors_dtype(tensor.dtype)} {tuple(tensor.shape)}, "
                f"the header says {spec.dtype} {spec.shape}"
            )
        import torch  # here, not at module level: header-only users of this module never need it

        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
        with self._named_errors():
            write_all(self._fh, memoryview(data.numpy()))
        self._next += 1
        return spec.nbytes

    @contextlib.contextmanager
    def _named_errors(self) -> Iterator[None]:
        """An OSError of this file's writes names the file (an in-kernel copy's would name none)."""
        try:
            yield
        except OSError as exc:
            if exc.filename is not None or isinstance(exc, MoteError):
                raise
            raise OSError(exc.errno, exc.strerror, str(self.path)) from None

    def copy(self, name: str, reader: TensorReader, source: str) -> int:
        """Append the stored bytes of ``reader``'s tensor ``source`` as tensor ``name``, unchanged."""
        spec = self._next_spec(name)
        info = reader.index[source]
        if (info.dtype, info.shape) != (spec.dtype, spec.shape):
            raise InternalError(f"{source} is {info.dtype} {info.shape}, the header says {spec.dtype} {spec.shape}")
        with self._named_errors():
            reader.copy_to(source, self._fh)
        self._next += 1
        return spec.nbytes

    def close(self) -> None:
        """Finish the file; every tensor of the header must have been written."""
        self._fh.close()
        if self._next != len(self.shard.tensors):
            missing = self.shard.tensors[self._next].name
            raise InternalError(f"{self.path.name} closed before {missing} was written")

    def abort(self) -> None:
        """Close without checks (the staging directory is about to be removed)."""
        self._fh.close()


def write_shards(
    directory: Path,
    shards: Sequence[Shard],
    metadata: Mapping[str, str],
    write_one: Callable[[ShardWriter, TensorSpec], int],
    progress: ProgressFn | None = None,
    mode: int = 0o666,
) -> int:
    """Write every shard, tensor by tensor through ``write_one``, then the index json; returns bytes
    written. Files are created with permission bits ``mode`` (narrowed by the umask)."""
    written = 0
    for shard in shards:
        writer = ShardWriter(directory / shard.file, shard, metadata, mode)
        try:
            for spec in shard.tensors:
                check_interrupted()
                n = write_one(writer, spec)
                written += n
                if progress is not None:
                    progress(n)
        except BaseException:
            writer.abort()
            raise
        writer.close()
    write_index(directory, shards, mode)
    return written


def create_file(path: Path, mode: int) -> int:
    """Create a new file (never through an existing one or a symlink) and return its descriptor."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode & 0o777)


def write_text(path: Path, text: str, mode: int = 0o666) -> None:
    """Write a new text file with permission bits ``mode`` (narrowed by the umask)."""
    with open(create_file(path, mode), "w", encoding="utf-8") as fh:
        fh.write(text)


def write_index(directory: Path, shards: Sequence[Shard], mode: int = 0o666) -> None:
    """Write ``model.safetensors.index.json`` for several shards (nothing for one file)."""
    if len(shards) < 2:
        return
    weight_map = {spec.name: shard.file for shard in shards for spec in shard.tensors}
    index = {
        "metadata": {"total_size": sum(s.nbytes for s in shards)},
        "weight_map": dict(sorted(weight_map.items())),
    }
    write_text(directory / INDEX_FILE, json.dumps(index, indent=2) + "\n", mode)


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
        self, final: str | Path, *, overwrite: bool = False, protect: Sequence[Path] = (), mode: int = 0o777,
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
            check_output_path(self.final, overwrite=self.overwrite, protect=self.protect, directory=self.directory)  # again, under the lock
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
                    raise OutputWriteError(f"{entry}: cannot remove a killed run's leftovers ({describe_os_error(exc)})") from None

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
