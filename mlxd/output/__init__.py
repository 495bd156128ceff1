"""The output pipeline: what a choice's generated text means, as typed events (pure Python).

The engine emits decoded text; a ``ChoiceParser`` per choice cuts stop strings,
reasoning tags and tool-call tags out of it and returns typed events (text,
reasoning, tool call start / arguments / end, finish). Each HTTP dialect encodes
those events in its own JSON and stream framing, so no dialect parses output itself.

Nothing here imports mlx, a web framework or the runtime: the parser runs on
whichever thread feeds it and is tested on its own.
"""
