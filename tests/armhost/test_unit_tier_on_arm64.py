"""archq's own Python tested as aarch64 code: the unit tier (tests/unit: plain Python, no services) run by the
arm64 host's Python under qemu-user, from the same checkout, with the same pinned requirements as the arm64
worker. A failure here that tests/unit does not show on x86-64 is an architecture assumption in archq's code."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.armhost import arm_host, armhost_available
from tests.support.services import ROOT

pytestmark = [pytest.mark.armhost]

# tests/unit takes about 12 s as x86-64 code; every instruction of it is translated here.
_TIMEOUT_S = 1800


def test_unit_tier_passes_as_aarch64_code(tmp_path: Path) -> None:
    reason = armhost_available()
    if reason:
        pytest.fail(f"arm64 host unavailable: {reason}")
    with arm_host(tmp_path, binds=(ROOT,), name="armunit") as arm:
        machine = arm.run([arm.python, "-c", "import platform; print(platform.machine())"], cwd=ROOT)
        assert machine.stdout.strip() == "aarch64", machine.stderr
        pytest_argv = [arm.python, "-m", "pytest", "tests/unit", "-q", "-p", "no:cacheprovider"]
        proc = arm.run(["env", "PYTHONDONTWRITEBYTECODE=1", *pytest_argv], cwd=ROOT, timeout=_TIMEOUT_S)
    print(proc.stdout[-400:])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout
