"""docs/config.md is what the ProxyConfig dataclasses say, and its example is a valid config."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from proxyd import config_doc
from proxyd.config import parse_config


def test_the_committed_page_is_the_generated_one() -> None:
    assert config_doc.main(["--check"]) == 0, "run: python -m proxyd.config_doc > docs/config.md"


def test_the_check_fails_when_the_page_is_stale(tmp_path, monkeypatch) -> None:
    stale = tmp_path / "config.md"
    stale.write_text(config_doc.render().replace("| `udp_port` |", "| `udp_prt` |"), encoding="utf-8")
    monkeypatch.setattr(config_doc, "DOC", stale)
    assert config_doc.main(["--check"]) == 1


def test_every_field_of_every_section_is_on_the_page() -> None:
    page = config_doc.render()
    for path, cls in config_doc._sections(config_doc.c.ProxyConfig, ""):
        section = page.split(f"## `{path}`\n" if path else "## Top level\n", 1)[1].split("\n## ", 1)[0]
        for f in dataclasses.fields(cls):
            assert re.search(rf"^\| `{f.name}` \|", section, re.M), f"{path}.{f.name}"


def test_the_minimal_example_parses_with_the_documented_defaults() -> None:
    example = re.search(r"```json\n(.*?)```", config_doc.render(), re.S)
    assert example
    cfg = parse_config(json.loads(example.group(1)))
    assert cfg.services.sip.udp_port == 5060 and cfg.bind == "0.0.0.0"


def test_a_field_without_a_meaning_is_an_error(monkeypatch) -> None:
    @dataclasses.dataclass(frozen=True)
    class Odd:
        #: documented
        a: int = 1
        b: int = 2

    assert config_doc.field_docs(Odd) == {"a": "documented"}
    monkeypatch.setattr(config_doc.c, "ProxyConfig", Odd)
    with pytest.raises(config_doc.UndocumentedField, match=r"Odd\.b"):
        config_doc.render()
