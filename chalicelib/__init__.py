"""ChurnGuard: churn early warning and retention on AWS Chalice."""
