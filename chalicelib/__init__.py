"""ChurnGuard's Lambda code: exactly what the deployed functions run."""

# The project's version, in this one place: pyproject.toml reads it, and so does `churnguard --version`.
__version__ = "0.1.0"
