"""The run report: aggregates every run adds up, drift against the training data, and its HTML/Markdown/JSON."""
