"""The one botocore client configuration and the one way to read an error's code."""

from __future__ import annotations

from botocore.config import Config
from botocore.exceptions import ClientError

from chalicelib.retry import MAX_ATTEMPTS

# Adaptive mode retries throttling and 5xx errors with backoff and rate-limits the client; the pool
# is sized for the concurrent conditional writes.
BOTO_CONFIG = Config(retries={"mode": "adaptive", "max_attempts": MAX_ATTEMPTS}, max_pool_connections=32)


def error_code(exc: ClientError) -> str:
    """Return the AWS error code of a failed call ('' when the response names none)."""
    return exc.response.get("Error", {}).get("Code", "")


def retry_attempts(response: dict) -> int:
    """Return how many times botocore retried a call before this response (or error response)."""
    return response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
