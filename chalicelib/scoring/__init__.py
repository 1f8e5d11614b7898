"""From events to scores: behaviour state, features, the model artifact, tiers, reasons, segments."""
