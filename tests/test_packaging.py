"""callbacks/ and datamodules/ ship inside the distribution as lightning_longrl.callbacks/.datamodules."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # multi-process, notebook or end-to-end runs: not in the fast lane

REPO = Path(__file__).resolve().parents[1]
SOURCE_PACKAGES = sorted(
    str(p.parent.relative_to(REPO)) for p in REPO.glob("lightning_longrl/**/__init__.py")
) + ["callbacks", "datamodules"]


def test_wheel_contents_and_import(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("lightning_longrl-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "lightning_longrl/callbacks/hf_export.py" in names
    assert "lightning_longrl/datamodules/long_video.py" in names
    assert not any(n.startswith(("callbacks/", "datamodules/", "tests/")) for n in names)
    for package in SOURCE_PACKAGES:  # every package of the source tree is in the wheel
        target = package if package.startswith("lightning_longrl") else f"lightning_longrl/{package}"
        assert f"{target}/__init__.py" in names, package
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "lightning-longrl = lightning_longrl.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    code = ("import lightning_longrl.callbacks as c, lightning_longrl.datamodules as d, importlib.util as u;"
            "print(c.__file__); print(d.__file__); print(u.find_spec('callbacks'), u.find_spec('datamodules'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": ""},
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0].startswith(str(site)) and out[1].startswith(str(site))
    assert out[2] == "None None"  # no generic top-level packages


def test_editable_install_imports_from_anywhere(tmp_path):
    code = "import lightning_longrl.callbacks as c, lightning_longrl.datamodules as d; print(c.HFExport, d.LongVideoDataModule)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert "HFExport" in out and "LongVideoDataModule" in out
