"""Errors the command line reports as one line, without a traceback."""


class ConfigError(ValueError):
    """A setting that cannot work; the message names the option and what was
    expected. Raised before anything is compiled."""
