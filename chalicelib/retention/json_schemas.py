"""The project's JSON Schemas: schemas/ beside chalicelib/ (the repository's top level, or the Lambda task root),
else chalicelib/_schemas/ (where `pip install .` puts them)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

_SCHEMA_DIRS = (Path(__file__).resolve().parents[2] / "schemas", Path(__file__).resolve().parents[1] / "_schemas")


@cache
def validator(name: str) -> Any:
    """Return a Draft 2020-12 validator (with format checks) for the schema file `name`."""
    from jsonschema import Draft202012Validator

    for directory in _SCHEMA_DIRS:
        path = directory / name
        if path.exists():
            schema = json.loads(path.read_text())
            Draft202012Validator.check_schema(schema)
            return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    raise FileNotFoundError(f"{name} not found in {[str(d) for d in _SCHEMA_DIRS]}")
