"""Typed domain errors; the CLI turns each into one red line and its exit code."""


class InputWarning(UserWarning):
    """A silent wrong answer is likely (a truncated image, ...); the CLI prints it as one warning line."""


class PaddleClsQError(Exception):
    """Base of every error a user can cause; `exit_code` is what the CLI exits with."""

    exit_code = 1


class ConfigError(PaddleClsQError):
    """A config file, YAML key or option value is wrong."""

    exit_code = 2


class ModelFormatError(PaddleClsQError):
    """A model folder is missing, incomplete or not a loadable Paddle inference model."""

    exit_code = 2


class InputError(PaddleClsQError):
    """An image or data file can't be used."""

    exit_code = 2


class BackendUnavailableError(PaddleClsQError):
    """The engine behind a backend is not installed or has no device to run on."""

    exit_code = 2


class AccuracyBudgetError(PaddleClsQError):
    """INT8 top-1 dropped by more than the configured budget."""

    exit_code = 3


class DownloadError(PaddleClsQError):
    """A model could not be fetched, verified or unpacked; the message names the URL or file."""

    exit_code = 4
