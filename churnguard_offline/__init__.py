"""ChurnGuard's offline tools: command line, training, evaluation, data generation, demo, test helpers.

Nothing here runs in Lambda or is packaged into it; it may import chalicelib, never the other way round.
"""
