"""The mlxd benchmark: mlxd, ``mlx_lm.server`` and the raw mlx-lm engine side by side.

Run ``python -m bench`` (``--quick`` for a smoke run). It prints a table and writes
``bench/RESULTS.md`` with the command, versions, machine and the mlxd ratios.
"""
