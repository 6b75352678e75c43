"""Package discovery: pyproject.toml holds the metadata; this only finds the packages, so a new module or
subpackage of cldiff_bench ships in the wheel without being listed anywhere."""
from setuptools import find_packages, setup

setup(packages=find_packages(include=["cldiff_bench", "cldiff_bench.*"]) + ["cldiff_bench_strategies"])
