"""Schemathesis fuzzes the live API (a real `archq api` process) from its own OpenAPI document with an
operator token: no answer is a 5xx, and every status, content type, header and body matches the document."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.auth import make_token

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)


def schemathesis(url: str, token: str, seconds: int, cwd: Path, *extra: str) -> None:
    binary = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis"
    result = subprocess.run(
        [
            binary, "run", f"{url}/api/v1/openapi.json",
            "--header", f"Authorization: Bearer {token}",
            "--checks", CHECKS,
            "--phases", "examples,coverage,fuzzing",
            "--max-examples", "15",
            "--seed", "7",
            "--workers", "2",
            "--max-time", str(seconds),
            "--request-timeout", "10",
            "--no-color",
            *extra,
        ],
        cwd=cwd, capture_output=True, text=True, timeout=seconds + 60,
        env={**os.environ, "NO_COLOR": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]


def test_the_live_api_matches_its_openapi_document(live_api, tmp_path: Path):
    schemathesis(live_api.url, live_api.operator_token, 25, tmp_path)


def test_the_admin_operations_match_the_document(app, live_api, tmp_path: Path):
    # With an operator token the host, token, image and project mutations answer 403 only: fuzz them as an admin. The
    # token operations last and with a token of their own: the fuzzer revokes the tokens GET /tokens lists,
    # its own among them, and every request after that is a (documented) 401.
    schemathesis(
        live_api.url, live_api.admin_token, 10, tmp_path, "--include-path-regex", "^/api/v1/(hosts|images|projects)"
    )
    tokens_admin = make_token(app, "admin", "live-tokens-admin")
    schemathesis(live_api.url, tokens_admin, 10, tmp_path, "--include-path-regex", "^/api/v1/tokens")
