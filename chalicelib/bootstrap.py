"""`chalicelib.bootstrap.ensure_resources`, the contract's name: it lives with the offline tools."""

from churnguard_offline.bootstrap import ensure_resources

__all__ = ["ensure_resources"]
