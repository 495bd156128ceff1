"""Route handlers, grouped by surface."""
