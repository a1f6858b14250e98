# SPDX-License-Identifier: MIT
"""`pip install --no-build-isolation ./python` works offline, with setuptools' backend and without `wheel`."""
import importlib.util
import os
import subprocess
import sys

import pytest

PKG = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _have_pip():
    return subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _have_pip(), reason="pip is not installed for this Python")
@pytest.mark.parametrize("wheel_package", ["if-present", "without", "without-tomllib", "without-setuptools"])
def test_pip_install_no_build_isolation_offline(tmp_path, wheel_package):
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    if wheel_package.startswith("without"):
        env["FORKLOG_BUILD_WITHOUT_WHEEL"] = "1"  # the backend's own wheel builder, as on a Python without `wheel`
    if wheel_package == "without-tomllib":
        env["FORKLOG_BUILD_WITHOUT_TOMLLIB"] = "1"  # and as before Python 3.11, which has no tomllib
    if wheel_package == "without-setuptools":
        env["FORKLOG_BUILD_WITHOUT_SETUPTOOLS"] = "1"  # as in a venv of Python 3.12 or later
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--target",
                        str(target), PKG], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    env["PYTHONPATH"] = str(target)
    r = subprocess.run([sys.executable, "-c", "import forklog, sys; print(forklog.__file__); "
                        "print(forklog.Log, forklog.Handler, forklog.library_version())"],
                       env=env, capture_output=True, text=True, cwd=str(tmp_path), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(str(target))
    distinfo = next(target.glob("forklog-*.dist-info"))
    assert "Name: forklog" in (distinfo / "METADATA").read_text()
    # The MIT License asks for its text in every copy: the installed package carries the repository's LICENSE.
    with open(os.path.join(os.path.dirname(PKG), "LICENSE")) as f:
        assert (distinfo / "LICENSE").read_text() == f.read()


def test_backend_reads_pyproject_as_tomllib_does():
    """Before Python 3.11 (no tomllib) the build backend reads pyproject.toml itself: the same data as tomllib."""
    tomllib = pytest.importorskip("tomllib")
    spec = importlib.util.spec_from_file_location("forklog_build_backend", os.path.join(PKG, "_build", "backend.py"))
    backend = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(backend)
    with open(os.path.join(PKG, "pyproject.toml"), encoding="utf-8") as f:
        text = f.read()
    assert backend.toml_subset(text) == tomllib.loads(text)
