"""Errors the command line reports as one line, without a traceback.

Every user mistake or unusable input raises a subclass of ``MedjaxError`` whose
message names the file, field or option and what was expected. The programs in
``medjax.cli`` catch ``MedjaxError`` (and only it): anything else is a bug and
keeps its traceback."""


class MedjaxError(Exception):
    """A user mistake or an unusable input, reported as one line."""


class ConfigError(MedjaxError, ValueError):
    """A setting that cannot work; the message names the option and what was
    expected. Raised before anything is compiled."""


class InputError(MedjaxError, ValueError):
    """An input file or directory that cannot be read as expected; the message
    is ``"<path>: <what was wrong>"``."""


class RunDirectoryError(MedjaxError):
    """A run directory that cannot be used as asked: locked by a live process,
    resumed with a configuration that changes what is learned, checkpoints that
    cannot be read."""


class NonFiniteError(MedjaxError):
    """Training or evaluation produced a non-finite value (NaN or inf)."""


class WriteError(MedjaxError, OSError):
    """A file could not be written (full disk, no permission); the previous
    file at that path, if any, is intact."""
