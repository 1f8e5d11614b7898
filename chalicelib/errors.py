"""Exception types: bad input (exit 2 / file moved aside) versus retryable faults."""

from __future__ import annotations


class ChurnGuardError(Exception):
    """Base of every error ChurnGuard raises on purpose."""


class InputError(ChurnGuardError):
    """Input that cannot be used at all; the CLI exits 2 with this message."""


class UnreadableFileError(InputError):
    """A behaviour file that cannot be read at all (format, columns, compression)."""

    def __init__(self, source: str, reason: str, line: int | None = None) -> None:
        self.source = source
        self.reason = reason
        self.line = line
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[str, str, int | None]]:
        # Keeps the error intact when it comes back from a worker process.
        return (type(self), (self.source, self.reason, self.line))


class ModelArtifactError(ChurnGuardError):
    """A model artifact that is missing, tampered with or built for other library versions."""


class RetryableError(ChurnGuardError):
    """A fault worth retrying (throttling, partial batch failure that outlived its retries)."""
