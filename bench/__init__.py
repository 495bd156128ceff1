"""The mlxd benchmark: mlxd, ``mlx_lm.server`` and the raw mlx-lm engine side by side.

Run ``python -m bench`` (``--quick`` for a smoke run, ``--models tiny`` to leave out the
slow small model). It prints the tables and writes ``bench/RESULTS.md`` with the command,
versions, machine, the mlxd ratios and a verdict for every target.
"""
