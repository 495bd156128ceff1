"""The ``mlxd`` command line. It talks to the daemon only over HTTP and never imports MLX."""
