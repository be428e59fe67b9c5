"""`cocoon attest verify` with files that are not what they claim to be, and collateral that had
expired at the default verification time: one line that names the file, or a hint that says what
to do; never internal exception text."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from node.cli import main
from tests.tee.conftest import fixtures_dir

INTEL_IMAGE = "b260fa9168ca9f28e7f15f128a45ac31c419705b31a60feac30b322ee06bc752"


@pytest.fixture
def tdx():
    d = fixtures_dir()
    if not (d / "tdx_quote").exists():
        pytest.skip(f"TDX fixtures not found in {d}: COCOON_FIXTURES must name the folder that holds tdx/")
    return d


def verify(*args):
    r = CliRunner().invoke(main, ["attest", "verify", *map(str, args)])
    assert "Traceback" not in r.output and "UnicodeDecodeError" not in r.output, r.output
    return r


def test_binary_collateral_file_is_named(tdx, tmp_path):
    f = tmp_path / "random.bin"
    f.write_bytes(bytes(range(256)) * 8)
    r = verify(tdx / "tdx_quote", "--collateral", f)
    assert r.exit_code == 2
    errors = [ln for ln in r.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and str(f) in errors[0] and "not collateral JSON" in errors[0]
    r = verify(tdx / "tdx_quote", "--collateral", tmp_path / "missing.json")
    assert r.exit_code == 2 and "missing.json" in r.output


def test_expired_collateral_at_the_default_time_gives_a_hint(tdx):
    r = verify(tdx / "tdx_quote", "--collateral", tdx / "tdx_quote_collateral.json", "--allow-image", INTEL_IMAGE)
    assert r.exit_code == 1
    assert "hint: the collateral had expired at the verification time" in r.output
    assert "--time WHEN" in r.output and "valid until" in r.output
    # with --time inside the collateral's validity it passes, and no hint is given
    r = verify(tdx / "tdx_quote", "--collateral", tdx / "tdx_quote_collateral.json", "--allow-image", INTEL_IMAGE,
               "--time", "2025-06-25")
    assert r.exit_code == 0 and "hint" not in r.output
    # an explicit --time at which it had expired is the user's choice: the check says so, no hint
    r = verify(tdx / "tdx_quote", "--collateral", tdx / "tdx_quote_collateral.json", "--time", "2025-08-01")
    assert r.exit_code == 1 and "hint" not in r.output


@pytest.mark.parametrize("args, needle", [
    (["verify", "127.0.0.1:99999"], "not between 1 and 65535"),
    (["dev-root", "{tmp}/d", "--days", "-5"], "is not in the range"),
    (["serve-simulated", "--dev-root", "{tmp}", "--port", "99999"], "is not in the range"),
])
def test_attest_numbers_are_ranged(tmp_path, args, needle):
    r = CliRunner().invoke(main, ["attest", *[a.replace("{tmp}", str(tmp_path)) for a in args]])
    assert r.exit_code == 2 and needle in r.output and "Traceback" not in r.output
