"""Exception types: bad input (exit 2 / file moved aside) versus retryable faults."""

from __future__ import annotations


class ChurnGuardError(Exception):
    """Base of every error ChurnGuard raises on purpose."""


class InputError(ChurnGuardError):
    """Input that cannot be used at all; the CLI exits 2 with this message."""


class UnreadableFileError(InputError):
    """A behaviour file that cannot be read at all (format, columns, compression).

    `reason` never quotes the file; `detail` holds what does (a header that may be a data row), so logs and
    run summaries can carry `safe_message` while the operator's copy, `str(error)`, says everything.
    """

    status = "unreadable"  # the run's status when a file is refused for this

    def __init__(self, source: str, reason: str, line: int | None = None, detail: str | None = None) -> None:
        self.source = source
        self.reason = reason
        self.line = line
        self.detail = detail
        super().__init__(self.safe_message if detail is None else f"{self.safe_message} ({detail})")

    @property
    def safe_message(self) -> str:
        """Return where and why, without the detail that quotes the file."""
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        return f"{where}: {self.reason}"

    def __reduce__(self) -> tuple[type, tuple[str, str, int | None, str | None]]:
        # Keeps the error intact when it comes back from a worker process.
        return (type(self), (self.source, self.reason, self.line, self.detail))


class FileTooLargeError(UnreadableFileError):
    """A behaviour file with more events and users than the function can hold in memory."""

    status = "too_large"


class InvalidMessageError(ChurnGuardError):
    """A retention message that breaks its schema: a fault in ChurnGuard, not in the input."""


class ModelArtifactError(ChurnGuardError):
    """A model artifact that is missing, tampered with or built for other library versions."""


class RetryableError(ChurnGuardError):
    """A fault worth retrying (throttling, partial batch failure that outlived its retries)."""
