"""One exception family for everything mote-convert reports to a user.

Every error the library raises on bad input is a :class:`MoteError`; the CLI turns it into one
line and the kind's exit code. Anything else escaping the library is a bug.
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
