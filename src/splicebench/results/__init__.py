"""A run's directory (manifest, samples, raw output; atomic, versioned) and per-sample metrics (pure)."""
