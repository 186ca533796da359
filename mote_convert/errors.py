"""One exception family for everything mote-convert reports to a user.

Every error the library raises on bad input or a failed environment operation is a
:class:`MoteError`; the CLI turns it into one line and the kind's exit code (``docs/usage.md``
lists them). An ``OSError`` is never let through bare: the library says whether it happened while
reading the input (:class:`InputReadError`) or writing the output (:class:`OutputWriteError`), and
names the path. Anything else escaping the library is a bug.
"""

from __future__ import annotations


class MoteError(Exception):
    """Base of every error mote-convert raises on bad input or a failed check."""

    exit_code: int = 1


class OptionsError(MoteError):
    """An option value is invalid (top-k above the expert count, a layer out of range, ...)."""

    exit_code = 2


class InputNotFoundError(MoteError):
    """The input path is missing, or lacks config.json or safetensors weights."""

    exit_code = 3


class CorruptCheckpointError(MoteError):
    """A safetensors file or index cannot be read, is truncated, or disagrees with itself."""

    exit_code = 4


class UnsupportedArchitectureError(MoteError):
    """The model type has no architecture definition, or its keys do not match the definition."""

    exit_code = 5


class PlanError(MoteError):
    """The conversion plan does not fit the source (a shape, a missing or unaccounted tensor)."""

    exit_code = 6


class OutputExistsError(MoteError):
    """The output path exists and ``overwrite`` was not given, or it would clobber the input."""

    exit_code = 7


class FormatError(MoteError):
    """A checkpoint is not in the MoTE format an operation needs (pack on a packed one, ...)."""

    exit_code = 8


class TernaryInputError(MoteError, ValueError):
    """Bad input to the pure tensor math: wrong dtype, rank, or a code outside {-1, 0, 1}."""

    exit_code = 9


class CheckFailedError(MoteError):
    """``inspect`` found problems in a checkpoint (the report lists each one)."""

    exit_code = 10


class InputReadError(MoteError):
    """An input file exists but cannot be read (permission denied, I/O error, ...)."""

    exit_code = 11


class OutputWriteError(MoteError):
    """The output cannot be written (read-only or missing parent, disk full, busy mount point, ...)."""

    exit_code = 12


class UnattributedOSError(MoteError):
    """An operating-system error the library did not attribute to input or output (please report it)."""

    exit_code = 13


class DataError(MoteError):
    """Training data is malformed: not LLaVA-format conversations, an image missing, nothing to learn."""

    exit_code = 14


class TrainingError(MoteError):
    """Training cannot go on usefully: a non-finite loss or gradient (the weights would become NaN)."""

    exit_code = 15


class Interrupted(MoteError):
    """The run was stopped by a signal (SIGINT, SIGTERM, SIGHUP); its staging output was removed.

    The exit code is the shell's convention, 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM).
    ``left`` says what the run leaves (by default: nothing).
    """

    def __init__(self, signum: int, left: str = "nothing was left behind") -> None:
        import signal

        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}; {left}")


class InternalError(RuntimeError):
    """A broken invariant of mote-convert itself: a bug, not a user error. Deliberately not a
    :class:`MoteError`: the CLI shows it with its traceback and asks for a report (exit code 70,
    ``EX_SOFTWARE``), never as a one-line user mistake."""

    exit_code = 70


def describe_exception(exc: BaseException, limit: int | None = None) -> str:
    """Another library's exception as one line: its kind, then its message with every run of
    whitespace (newlines too) collapsed, cut at ``limit`` characters."""
    text = " ".join(str(exc).split())
    if limit is not None and len(text) > limit:
        text = text[:limit] + "..."
    return f"{type(exc).__name__}: {text}"


def describe_os_error(exc: OSError) -> str:
    """``strerror`` (or the message) of an OSError, without the path (callers name the path)."""
    return exc.strerror or str(exc) or type(exc).__name__


def read_error(path: object, exc: OSError, doing: str = "read") -> InputReadError:
    """An :class:`InputReadError` naming ``path`` and what was being done."""
    return InputReadError(f"{path}: cannot {doing} input ({describe_os_error(exc)})")


def write_error(path: object, exc: OSError, doing: str = "write") -> OutputWriteError:
    """An :class:`OutputWriteError` naming ``path`` and what was being done."""
    return OutputWriteError(f"{path}: cannot {doing} output ({describe_os_error(exc)})")
