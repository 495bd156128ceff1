"""Everything that touches MLX. It all runs on the one MLX worker thread."""
