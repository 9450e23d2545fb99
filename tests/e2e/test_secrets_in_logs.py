"""The log check of the e2e runs (secrets_in_logs.py) finds a secret in each shape a log line
would carry it, in every log file of a run and in nothing else."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.e2e.secrets_in_logs import fragments, leaks, log_files

KEY = ec.generate_private_key(ec.SECP256R1()).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
URL = "https://proxy.test:8443/p/Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4/cfg/"
SECRETS = {"key": KEY, "url": URL, "api key": "1.c2VjcmV0LXNlY3JldC1zZWNyZXQ"}


def test_each_shape_of_a_secret_is_found(tmp_path: Path) -> None:
    shapes = {
        "pem.log": f"event=x key={KEY}",
        "repr.out": f"event=x key={KEY!r}",
        "json.log.1": json.dumps({"msg": KEY}),
        "path.log": 'GET /p/Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4/cfg/ HTTP/1.1" 200',
        "token.out": "event=refused token=Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4",
        "header.log": "Authorization: Bearer 1.c2VjcmV0LXNlY3JldC1zZWNyZXQ",
    }
    for name, text in shapes.items():
        (tmp_path / name).write_text(text + "\n")
    (tmp_path / "clean.log").write_text("event=certificate_active fingerprint=AB:CD\n")
    (tmp_path / "not-a-log.txt").write_text(KEY)
    files = log_files(tmp_path)
    assert [f.name for f in files] == sorted([*shapes, "clean.log"])
    found = leaks(SECRETS, files)
    assert sorted(found) == sorted([f"key in {tmp_path / n}" for n in ("pem.log", "repr.out", "json.log.1")]
                                   + [f"url in {tmp_path / n}" for n in ("path.log", "token.out")]
                                   + [f"api key in {tmp_path / 'header.log'}"])
    assert leaks(SECRETS, [tmp_path / "clean.log"]) == []


def test_a_token_in_the_fragment_is_looked_for_and_the_public_path_is_not() -> None:
    url = "http://127.0.0.1:8000/api/v1/register/#Zq3v9kP0aLmN4xYt7RbC2dEf"
    assert fragments(url) >= {"Zq3v9kP0aLmN4xYt7RbC2dEf"} and "/api/v1/register/" not in fragments(url)
