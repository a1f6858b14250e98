# SPDX-License-Identifier: MIT
"""PEP 517 build backend of the forklog Python package: setuptools when it can, the standard library otherwise.

setuptools (before 70.1) needs the separate `wheel` package to build a wheel. When setuptools and `wheel` can be
imported this module is exactly setuptools.build_meta. When either cannot (a Python that ships setuptools but not
`wheel`, or a venv of Python 3.12 or later, which has no setuptools, with `pip install --no-build-isolation` and no
network), the wheel, a pure-Python one, is built here with the standard library: the package's files, and METADATA
from pyproject.toml. sdists are always setuptools'.
"""
import ast
import base64
import hashlib
import os
import zipfile

try:
    from setuptools import build_meta as _setuptools
except ImportError:
    _setuptools = None
if os.environ.get("FORKLOG_BUILD_WITHOUT_SETUPTOOLS"):
    _setuptools = None  # as in a venv of Python 3.12 or later (test_install.py)

try:
    import wheel  # noqa: F401

    _HAVE_WHEEL = True
except ImportError:
    _HAVE_WHEEL = False

try:
    import tomllib  # Python 3.11 and later
except ImportError:
    tomllib = None
if os.environ.get("FORKLOG_BUILD_WITHOUT_TOMLLIB"):
    tomllib = None  # as before Python 3.11 (test_install.py)


def _toml_value(text):
    if text.startswith("{"):
        items = (item.partition("=") for item in text.strip("{}").split(",") if item.strip())
        return {key.strip(): _toml_value(value.strip()) for key, _, value in items}
    if text in ("true", "false"):
        return text == "true"
    return ast.literal_eval(text)


def toml_subset(text):
    """pyproject.toml read without tomllib, which Python has from 3.11 on only (the package supports 3.8): tables,
    and keys whose values are strings, numbers, booleans, arrays of them (over several lines) or inline tables.
    test_install.py holds it to tomllib's result on this package's pyproject.toml."""
    data, table = {}, None
    lines = iter(text.splitlines())
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            table = data
            for part in line.strip("[]").split("."):
                table = table.setdefault(part.strip(), {})
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if value.startswith("["):
            while not value.rstrip().endswith("]"):
                more = next(lines).strip()
                if not more.startswith("#"):
                    value += " " + more
        table[key.strip().strip('"')] = _toml_value(value)
    return data


if _setuptools and _HAVE_WHEEL and not os.environ.get("FORKLOG_BUILD_WITHOUT_WHEEL"):
    from setuptools.build_meta import *  # noqa: F401,F403
else:
    if _setuptools:
        get_requires_for_build_sdist = _setuptools.get_requires_for_build_sdist
        build_sdist = _setuptools.build_sdist
    else:

        def get_requires_for_build_sdist(config_settings=None):
            return ["setuptools>=61"]

        def build_sdist(sdist_directory, config_settings=None):
            raise RuntimeError("forklog: building an sdist needs setuptools, which this Python does not have")

    _ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def _project():
        with open(os.path.join(_ROOT, "pyproject.toml"), "rb") as f:
            text = f.read()
        data = tomllib.loads(text.decode("utf-8")) if tomllib else toml_subset(text.decode("utf-8"))
        return data["project"], data["tool"]["setuptools"]["packages"]

    def _metadata(project):
        lines = ["Metadata-Version: 2.1", "Name: " + project["name"], "Version: " + project["version"]]
        if "description" in project:
            lines.append("Summary: " + project["description"])
        if "requires-python" in project:
            lines.append("Requires-Python: " + project["requires-python"])
        if "text" in project.get("license", {}):
            lines.append("License: " + project["license"]["text"])
        lines += ["Classifier: " + c for c in project.get("classifiers", [])]
        body = ""
        if "readme" in project:
            lines.append("Description-Content-Type: text/markdown")
            with open(os.path.join(_ROOT, project["readme"]), encoding="utf-8") as f:
                body = "\n" + f.read()
        return "\n".join(lines) + "\n" + body

    def _record_hash(data):
        return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

    def _build(wheel_directory, files):
        project, _ = _project()
        name, version = project["name"], project["version"]
        distinfo = "%s-%s.dist-info" % (name, version)
        files = list(files)
        files.append((distinfo + "/METADATA", _metadata(project).encode("utf-8")))
        # The license text goes with every copy (the MIT License asks for it), as setuptools' own backend puts
        # LICENSE into the .dist-info folder.
        with open(os.path.join(_ROOT, "LICENSE"), "rb") as f:
            files.append((distinfo + "/LICENSE", f.read()))
        files.append((distinfo + "/WHEEL", b"Wheel-Version: 1.0\nGenerator: forklog-backend\n"
                      b"Root-Is-Purelib: true\nTag: py3-none-any\n"))
        record = "".join("%s,%s,%d\n" % (arc, _record_hash(data), len(data)) for arc, data in files)
        record += distinfo + "/RECORD,,\n"
        files.append((distinfo + "/RECORD", record.encode("utf-8")))
        filename = "%s-%s-py3-none-any.whl" % (name, version)
        with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w", zipfile.ZIP_DEFLATED) as z:
            for arc, data in files:
                info = zipfile.ZipInfo(arc, date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                z.writestr(info, data)
        return filename

    def _package_files():
        _, packages = _project()
        for pkg in packages:
            base = os.path.join(_ROOT, *pkg.split("."))
            for fn in sorted(os.listdir(base)):
                if fn.endswith(".py"):
                    with open(os.path.join(base, fn), "rb") as f:
                        yield pkg.replace(".", "/") + "/" + fn, f.read()

    def get_requires_for_build_wheel(config_settings=None):
        return []

    def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
        return _build(wheel_directory, _package_files())

    def get_requires_for_build_editable(config_settings=None):
        return []

    def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
        # PEP 660: a .pth file that puts this source directory on sys.path.
        return _build(wheel_directory, [("__editable__.forklog.pth", (_ROOT + "\n").encode())])
