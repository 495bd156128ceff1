"""Stop strings on decoded text, wherever the pieces split it (pure Python, no model)."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from mlxd.output.stops import StopMatcher, partial_suffix


def feed_all(stops: tuple[str, ...], pieces: list[str]) -> tuple[str, bool]:
    """What a client sees for ``pieces`` (and whether a stop string ended it)."""
    matcher = StopMatcher(stops)
    out = []
    for piece in pieces:
        text, stopped = matcher.feed(piece)
        out.append(text)
        if stopped:
            return "".join(out), True
    return "".join(out) + matcher.flush(), False


def test_a_stop_split_across_pieces_is_cut_and_never_shown() -> None:
    assert feed_all(("END",), ["hello E", "N", "D and more"]) == ("hello ", True)


def test_text_that_might_start_a_stop_is_held_back_until_it_cannot() -> None:
    matcher = StopMatcher(("END",))
    assert matcher.feed("hello EN") == ("hello ", False)
    assert matcher.feed("O") == ("ENO", False)


def test_held_text_comes_out_when_the_sequence_ends_otherwise() -> None:
    assert feed_all(("END",), ["tail E"]) == ("tail E", False)


def test_the_earliest_of_several_stops_wins() -> None:
    assert feed_all(("xyz", "b"), ["a", "bxyz"]) == ("a", True)


def test_no_stops_passes_everything_through() -> None:
    assert feed_all((), ["a", "b"]) == ("ab", False)


def test_partial_suffix_measures_the_possible_start_of_a_marker() -> None:
    assert partial_suffix("abc<th", "<think>") == 3
    assert partial_suffix("abc", "<think>") == 0
    assert partial_suffix("<think", "<think>") == 6


@given(
    text=st.text(alphabet="abc \n", max_size=60),
    stop=st.text(alphabet="abc", min_size=1, max_size=4),
    cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=10),
)
def test_any_split_shows_exactly_the_text_before_the_first_stop(
    text: str, stop: str, cuts: list[int]
) -> None:
    bounds = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]
    shown, stopped = feed_all((stop,), pieces)
    where = text.find(stop)
    assert stopped == (where >= 0)
    assert shown == (text[:where] if where >= 0 else text)
