"""The bounded JSON decoder every outside document goes through (manager answers, config files)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxyd.config import MAX_PROBLEMS, ConfigError, load_file, loads
from proxyd.wirejson import WireJsonError, decode, too_deep

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab,:'),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet='[]{}"\\ab'), inner, max_size=3),
    max_leaves=20,
)


def depth(v: object) -> int:
    if isinstance(v, list):
        return 1 + max((depth(x) for x in v), default=0)
    if isinstance(v, dict):
        return 1 + max((depth(x) for x in v.values()), default=0)
    return 0


@given(json_values)
def test_depth_check_agrees_with_the_real_nesting(value: object) -> None:
    data = json.dumps(value).encode()
    d = depth(value)
    assert too_deep(data, d) is False
    if d > 0:
        assert too_deep(data, d - 1) is True
    assert decode(data, max_depth=max(d, 1)) == value


@pytest.mark.parametrize("data", [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 40 + b"1" + b"}" * 40,
                                  b"[" * 1_000_000])
def test_deep_documents_are_refused_not_recursed(data: bytes) -> None:
    with pytest.raises(WireJsonError, match="nested deeper than 32 levels"):
        decode(data)


def test_brackets_inside_strings_are_no_nesting() -> None:
    s = json.dumps({"pem": "[" * 1000 + '\\"{' * 500})
    assert decode(s)["pem"].startswith("[[[")


def test_unbalanced_and_broken_documents_are_a_json_error() -> None:
    for data in (b"[}", b"[[[", b"]]]", b"\xff", b'{"a": 1,}'):
        with pytest.raises(WireJsonError, match="not valid JSON"):
            decode(data)


def test_size_bound() -> None:
    with pytest.raises(WireJsonError, match="larger than 10 bytes"):
        decode(b"[" + b" " * 20 + b"]", max_bytes=10)


def test_config_loader_names_the_bound(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="manager: nested deeper"):
        loads(b"[" * 5000 + b"]" * 5000, source="manager")
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (9 * 1024 * 1024) + b"{}")
    with pytest.raises(ConfigError, match=f"{big}: larger than"):
        load_file(big)


def test_a_million_problems_are_fifty_and_a_count() -> None:
    doc = json.dumps({f"k{i}": 0 for i in range(200_000)})
    with pytest.raises(ConfigError) as err:
        loads(doc)
    problems = err.value.problems
    assert len(problems) == MAX_PROBLEMS + 1 and problems[-1].startswith("... and ")
    assert len(str(err.value)) < 20_000
