"""Build a C extension with AddressSanitizer + UBSan and run a differential fuzz driver against it
(tests/services/sip/cscan_fuzz.py, tests/services/http/chead_fuzz.py), for the sanitizer tests."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _runtime(name: str) -> str:
    out = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True, check=False)
    path = out.stdout.strip()
    if out.returncode != 0 or not os.path.isabs(path):
        pytest.skip(f"gcc has no {name}")
    return path


def fuzz_sanitized(source: str, driver: str, mutations: str, tmp_path: Path) -> str:
    """Compile `source` (relative to the repo) sanitized, run `python -m <driver> <so> <mutations> 7`
    with the runtimes preloaded, and return its stdout (a memory error aborts it: the assert says so)."""
    asan, ubsan = _runtime("libasan.so"), _runtime("libubsan.so")
    so = tmp_path / (Path(source).stem + "_sanitized.so")
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                    "-fno-omit-frame-pointer", f"-I{sysconfig.get_paths()['include']}",
                    str(ROOT / source), "-o", str(so)], check=True, timeout=120)
    env = {**os.environ, "LD_PRELOAD": f"{asan}:{ubsan}", "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
           "PYTHONMALLOC": "malloc"}  # every object its own allocation, so ASAN sees its bounds
    out = subprocess.run([sys.executable, "-m", driver, str(so), mutations, "7"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("differs 0"), out.stdout[-2000:]
    return out.stdout
