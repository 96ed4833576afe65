"""Framework integrations. Each module imports its framework lazily (its own extra)."""
