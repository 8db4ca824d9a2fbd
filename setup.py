"""The package list for setuptools; everything else is in pyproject.toml.

``conf/`` stays at the top of the repository and is installed as ``medjax.conf``
(``package-dir`` in pyproject.toml), its group folders as the namespace packages
below it. pyproject.toml's ``packages.find`` cannot add packages that
``package-dir`` maps from outside the package tree, and a literal list would
drift from the tree, so the list is computed here.
"""

from setuptools import find_namespace_packages, find_packages, setup

CONFIG_GROUPS = find_namespace_packages(where="conf", exclude=["*__pycache__*"])

setup(
    packages=[
        *find_packages(include=["medjax", "medjax.*"]),
        "medjax.conf",
        *(f"medjax.conf.{group}" for group in CONFIG_GROUPS),
    ]
)
