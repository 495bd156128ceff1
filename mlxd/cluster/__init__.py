"""Serving across several processes or Macs: launching the ranks and watching over them.

``mlxd serve`` with ``[distributed]`` becomes the *launcher*: it checks the hosts
(``hosts``), starts every rank through ``mlx.launch`` (``launcher``), and keeps a control
channel to each (``control``) to name a rank that dies or stops answering. The ranks
learn their place from the environment (``membership``). No MLX is imported here: what
the ranks compute together lives in ``mlxd.runtime.mlx.lockstep``.
"""
