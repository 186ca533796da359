"""The package's version, on the bottom floor: the CLI and the package facade both read it here."""

__version__ = "0.1.0"
