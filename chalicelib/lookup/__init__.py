"""Reading the risk table for people: one user's current risk, the users of a tier pair, page by page."""
