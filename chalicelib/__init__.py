"""ChurnGuard's Lambda code: exactly what the deployed functions run."""
