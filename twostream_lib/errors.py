"""Errors raised on bad input. Each message names the file or value and what was expected."""


class DataError(ValueError):
    """A data root, split file, video, frame store or sample request is missing or malformed."""


class ConfigError(ValueError):
    """A parameter, profile or registry name is unknown or out of range."""


class StorageError(OSError):
    """Writing a file failed (no space left, read-only or missing folder); the message names the file."""
