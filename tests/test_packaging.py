"""The wheel and the sdist hold every module and data file of the package (CI builds both and runs .ci/check_dist.py
on them); here the checker itself is held to finding what is missing, and pyproject's package data to covering
every file the code reads at run time."""
import importlib.util
import tarfile
import tomllib
import zipfile
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _checker():
    spec = importlib.util.spec_from_file_location("check_dist", ROOT / ".ci" / "check_dist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _wheel(path: Path, names) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name in names:
            zf.writestr(name, "")
    return path


def test_the_checker_names_a_module_left_out_of_the_wheel(tmp_path):
    check = _checker()
    expected = check.expected_files()
    assert "cldiff_bench_strategies/gd.py" in expected and "cldiff_bench/distill/pd.py" in expected
    complete = _wheel(tmp_path / "complete.whl", expected)
    assert check.missing_from_wheel(complete, expected) == []
    kept = [n for n in expected if not n.startswith("cldiff_bench/distill/")]
    without_distill = _wheel(tmp_path / "partial.whl", kept)
    missing = check.missing_from_wheel(without_distill, expected)
    assert "cldiff_bench/distill/__init__.py" in missing and all(m.startswith("cldiff_bench/distill/") for m in missing)


def test_the_checker_names_a_file_left_out_of_the_sdist_and_fails_the_build(tmp_path, capsys):
    check = _checker()
    expected = check.expected_files()
    dist = tmp_path / "dist"
    dist.mkdir()
    _wheel(dist / "cldiff_bench-0-py3-none-any.whl", expected)
    with tarfile.open(dist / "cldiff_bench-0.tar.gz", "w:gz") as tf:
        for source in [*expected.values(), "pyproject.toml", "setup.py"]:  # README.md left out
            if source.endswith("pinned_rulers.py"):
                continue
            info = tarfile.TarInfo(f"cldiff_bench-0/{source}")
            tf.addfile(info)
    assert check.main([str(dist)]) == 1
    err = capsys.readouterr().err
    assert "README.md" in err and "pinned_rulers.py" in err


def test_package_data_covers_every_file_the_package_reads():
    """Every file under cldiff_bench/ that is not Python (claims, pinned rulers) matches a package-data pattern, so
    a wheel built by any setuptools ships it."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["cldiff_bench"]
    package = ROOT / "cldiff_bench"
    data = [p.relative_to(package).as_posix() for p in package.rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc", ".lock") and "__pycache__" not in p.parts]
    assert any(d.endswith(".pt") for d in data) and any(d.endswith(".toml") for d in data)
    uncovered = [d for d in data if not any(fnmatch(d, pattern) for pattern in patterns)]
    assert uncovered == []
