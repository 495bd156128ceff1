"""Property tests of the Host header parser behind the DNS-rebinding guard."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mlxd.http.guards import LOOPBACK_NAMES, host_name

names = st.sampled_from([*sorted(LOOPBACK_NAMES - {"::1"}), "mlxd.internal", "example.com"])
ports = st.integers(min_value=0, max_value=65535)


@given(names, ports)
def test_a_name_with_any_port_parses_to_the_name(name: str, port: int) -> None:
    assert host_name(f"{name}:{port}") == name
    assert host_name(name) == name
    assert host_name(name.upper()) == name


@given(st.text(max_size=80))
def test_never_raises_and_never_invents_a_loopback_name(raw: str) -> None:
    parsed = host_name(raw)
    if parsed is not None and parsed in LOOPBACK_NAMES:
        # Only an exact loopback name (optionally with a numeric port) may pass as loopback.
        stripped = raw.strip().lower()
        assert stripped == parsed or (
            stripped.startswith(parsed + ":") and stripped[len(parsed) + 1 :].isdigit()
        )


@given(
    names,
    st.text(alphabet="/\\@?#% ", min_size=1, max_size=3),
    st.text(alphabet="abc123.", min_size=1, max_size=10),
)
def test_separators_inside_the_value_are_refused(name: str, bad: str, tail: str) -> None:
    # (Surrounding whitespace is HTTP's optional whitespace and is trimmed, so a tail follows.)
    assert host_name(f"{name}{bad}{tail}") is None


def test_examples() -> None:
    assert host_name("") is None
    assert host_name("   ") is None
    assert host_name("localhost:") is None
    assert host_name("localhost:abc") is None
    assert host_name("localhost:123456") is None
    assert host_name("[::1]:8080") == "[::1]"
    assert host_name("[::1") is None
    assert host_name("user@localhost") is None
    assert host_name("127.0.0.1.evil.example") == "127.0.0.1.evil.example"
