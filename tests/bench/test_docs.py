"""bench/docs.py (`make bench-docs`): a run's JSON into plots and a generated section of the doc,
replaced in place on the next run, the hand-written text around it kept."""

from __future__ import annotations

import json
from pathlib import Path

from bench import docs

RUN = {
    "started": "2026-12-07T12:00:00+00:00", "quick": False, "wall_s": 512.3, "budget_s": 600.0, "complete": True,
    "machine": {"cores": 2, "loadavg_before": [3.1, 2.0, 1.0], "loadavg_after": [4.0, 3.0, 2.0], "git": "abc1234"},
    "benches": [
        {"name": "http", "outcome": "ok", "wall_s": 80.2, "budget_s": 110, "results": [
            {"workload": "http plain req/s per core", "anchor": "nginx", "ratio": 0.66, "better": "higher"},
            {"workload": "http plain req/s", "anchor": None, "ratio": None, "workers": 1, "throughput": 9000.0},
            {"workload": "http plain req/s", "anchor": None, "ratio": None, "workers": 2, "throughput": 16000.0},
        ]},
        {"name": "xmpp", "outcome": "ok", "wall_s": 40.0, "budget_s": 60, "results": [
            {"workload": "xmpp RSS per idle session", "anchor": "haproxy", "ratio": 0.76, "better": "lower"},
        ]},
    ],
}


def test_render_writes_plots_and_replaces_its_own_section(tmp_path: Path) -> None:
    run = tmp_path / "20261207T120000Z-full.json"
    run.write_text(json.dumps(RUN))
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nmethod text\n\n## Last figures\n\nolder log\n")
    made = docs.render(run, doc, tmp_path / "bench")
    assert sorted(p.name for p in made) == ["latest.json", "ratios.png", "workers.png"]
    for png in ("ratios.png", "workers.png"):
        assert (tmp_path / "bench" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = doc.read_text()
    assert "| http plain req/s per core | nginx | **0.66×** |" in text
    assert "| xmpp RSS per idle session | haproxy | **0.76×** (lower is better) |" in text
    assert "| http | 80 s | 110 s | ok |" in text
    assert "![ratios](bench/ratios.png)" in text and "![workers](bench/workers.png)" in text
    assert "load average 3.1 2.0 1.0 before" in text and "shared" in text

    RUN["benches"][0]["results"][0]["ratio"] = 0.9  # type: ignore[index]
    run.write_text(json.dumps(RUN))
    docs.render(run, doc, tmp_path / "bench")
    again = doc.read_text()
    assert again.count(docs.BEGIN) == 1 and again.count(docs.END) == 1
    assert "**0.90×**" in again and "**0.66×**" not in again
    assert again.startswith("# Benchmarks\n\nmethod text\n\n## Last figures\n") and again.endswith("older log\n")


def test_newest_takes_the_latest_full_run_not_a_quick_one(tmp_path: Path) -> None:
    for name in ("20261207T100000Z-full.json", "20261207T110000Z-full.json", "20261207T120000Z-quick.json"):
        (tmp_path / name).write_text("{}")
    assert docs.newest(tmp_path).name == "20261207T110000Z-full.json"
