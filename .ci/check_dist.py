"""Fail when a built wheel or sdist leaves out a module or a data file of the package.

    python .ci/check_dist.py dist/

The expected contents come from the source tree itself (every .py file under cldiff_bench/ and strategies/, and
every other file under cldiff_bench/ that is not a cache), so a new module is checked without being listed here.
"""
from __future__ import annotations

import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Source folder -> the package it installs as.
PACKAGES = {"cldiff_bench": "cldiff_bench", "strategies": "cldiff_bench_strategies"}
IGNORED_PARTS = {"__pycache__"}
IGNORED_SUFFIXES = {".pyc", ".lock"}


def expected_files(root: Path = ROOT) -> dict[str, str]:
    """{path inside the wheel: path in the source tree} of every file the installed package needs."""
    out = {}
    for source, installed in PACKAGES.items():
        for path in sorted((root / source).rglob("*")):
            rel = path.relative_to(root / source)
            if not path.is_file() or IGNORED_PARTS & set(rel.parts) or path.suffix in IGNORED_SUFFIXES:
                continue
            if source != "cldiff_bench" and path.suffix != ".py":
                continue
            out[f"{installed}/{rel.as_posix()}"] = f"{source}/{rel.as_posix()}"
    return out


def missing_from_wheel(wheel: Path, expected: dict[str, str]) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    return sorted(source for inside, source in expected.items() if inside not in names)


def missing_from_sdist(sdist: Path, expected: dict[str, str]) -> list[str]:
    with tarfile.open(sdist) as tf:
        # An sdist holds the source tree under one top folder, "name-version/".
        names = {name.split("/", 1)[1] for name in tf.getnames() if "/" in name}
    wanted = set(expected.values()) | {"pyproject.toml", "setup.py", "README.md"}
    return sorted(wanted - names)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python .ci/check_dist.py DIST_DIR", file=sys.stderr)
        return 2
    dist = Path(argv[0])
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    if not wheels:
        print(f"check_dist: no wheel in {dist}", file=sys.stderr)
        return 1
    expected = expected_files()
    failed = False
    for archive, missing in [(w, missing_from_wheel(w, expected)) for w in wheels] + \
                            [(s, missing_from_sdist(s, expected)) for s in sdists]:
        if missing:
            failed = True
            print(f"check_dist: {archive.name} lacks {len(missing)} file(s) of the package: {', '.join(missing)}",
                  file=sys.stderr)
        else:
            print(f"check_dist: {archive.name} holds all {len(expected)} files of the package")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
