"""The packages `pip install .` installs; everything else about the distribution is in pyproject.toml.

The code packages are found (a new subpackage needs no entry here). The repository's top-level schemas/ and
model_artifacts/ are installed inside chalicelib, as chalicelib/_schemas/ and chalicelib/_model_artifacts/, where
chalicelib/retention/json_schemas.py and chalicelib/scoring/artifact.py look after the repository's own places:
an installed `churnguard score` finds its pinned default model from any directory. pyproject.toml alone cannot
say this: its package list is either found or written out, and a found one cannot map a directory.
"""

from setuptools import find_namespace_packages, setup

BUNDLED = {"chalicelib._schemas": "schemas", "chalicelib._model_artifacts": "model_artifacts"}
CODE = find_namespace_packages(include=["chalicelib*", "churnguard_offline*"], exclude=["*.__pycache__"])

setup(packages=[*CODE, *BUNDLED], package_dir=BUNDLED)
