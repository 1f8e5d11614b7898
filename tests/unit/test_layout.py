"""The layout holds: only the AWS adapters talk to the SDK, and nothing deployed needs the offline tools.

`chalicelib/` is what runs in Lambda, so it may import neither test or training libraries (moto, chalice.test,
matplotlib, lifetimes, tqdm) nor `churnguard_offline`, which is not deployed; `chalicelib/aws/` holds the one
adapter per service that imports boto3. The contract's two entry points into the offline tools
(`python -m chalicelib`, `chalicelib.bootstrap`) are left out of the package and may hand over to it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.imports import Import, violations

AWS_SDK = ("boto3", "botocore")
NOT_DEPLOYED = ("moto", "chalice.test", "matplotlib", "lifetimes", "tqdm", "churnguard_offline")
ADAPTERS = "chalicelib/aws/"
OFFLINE_ENTRY_POINTS = frozenset({"chalicelib/__main__.py", "chalicelib/bootstrap.py"})


def forbidden_for(path: str) -> tuple[str, ...]:
    """Return the modules the deployed module at `path` (relative to the root) must not import."""
    sdk = () if path.startswith(ADAPTERS) else AWS_SDK
    offline = tuple(n for n in NOT_DEPLOYED if not (path in OFFLINE_ENTRY_POINTS and n == "churnguard_offline"))
    return sdk + offline


def layout_violations(source: str, path: str) -> list[Import]:
    """Return the imports of the module at `path` that break the layout."""
    return violations(source, path, forbidden_for(path))


def deployed_modules() -> list[str]:
    """Return app.py and every module under chalicelib/, relative to the root."""
    modules = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "chalicelib").rglob("*.py"))
    return ["app.py", *modules]


def test_deployed_code_imports_the_sdk_only_in_the_adapters_and_nothing_offline():
    # GIVEN every module that runs in Lambda
    modules = deployed_modules()
    assert "chalicelib/runs/pipeline.py" in modules and "chalicelib/aws/bucket.py" in modules
    # WHEN their imports are read, at any depth (imports inside functions included)
    found = [v for path in modules for v in layout_violations((ROOT / path).read_text(), path)]
    # THEN none breaks the layout
    assert not found, "imports that break the layout:\n" + "\n".join(map(str, found))


def test_the_adapters_are_what_imports_boto3():
    # GIVEN the AWS adapters  WHEN their imports are read  THEN they use the SDK (so the check above has teeth)
    sources = [(p.relative_to(ROOT).as_posix(), p.read_text()) for p in (ROOT / ADAPTERS).glob("*.py")]
    assert any(violations(source, path, AWS_SDK) for path, source in sources)


PLANTED = """\
from __future__ import annotations
import json

def handler(event):
    import boto3.session
    from botocore.exceptions import ClientError
    from chalice import test
    try:
        from churnguard_offline.cli import main
    except ImportError:
        main = None
    return importlib.import_module("tqdm.auto")
"""


def test_the_checker_names_file_line_and_import_of_each_planted_violation():
    # GIVEN a deployed module outside the adapters that imports forbidden modules, some inside a function
    path = "chalicelib/runs/planted.py"
    # WHEN it is checked
    found = [str(v) for v in layout_violations(PLANTED, path)]
    # THEN each forbidden import is reported with its file, line and module
    assert found == [
        f"{path}:5: imports boto3.session",
        f"{path}:6: imports botocore.exceptions",
        f"{path}:7: imports chalice.test",
        f"{path}:9: imports churnguard_offline.cli",
        f"{path}:12: imports tqdm.auto",
    ]


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("chalicelib/aws/planted.py", {"boto3.session", "botocore.exceptions"}),
        ("chalicelib/__main__.py", {"churnguard_offline.cli"}),
        ("chalicelib/bootstrap.py", {"churnguard_offline.cli"}),
    ],
)
def test_the_adapters_may_use_the_sdk_and_the_entry_points_may_hand_over_offline(path, allowed):
    # GIVEN the planted module at a place where some of its imports are allowed
    # WHEN it is checked THEN exactly those are not reported, and the rest still are
    found = {v.module for v in layout_violations(PLANTED, path)}
    assert not found & allowed
    assert "chalice.test" in found and "tqdm.auto" in found


def test_the_checker_resolves_relative_imports_and_ignores_look_alike_names():
    # GIVEN relative imports and modules whose names only start like forbidden ones
    source = (
        "from . import bucket\nfrom ..aws import tables\nimport motor\nimport boto3x\nfrom chalice import Chalice\n"
    )
    # WHEN the checker reads them THEN nothing is forbidden
    assert layout_violations(source, "chalicelib/runs/pipeline.py") == []
    # AND a relative import that reaches the offline package from inside it would be seen
    assert [v.module for v in violations("from . import cli\n", "churnguard_offline/x.py", NOT_DEPLOYED)] == [
        "churnguard_offline"
    ]


def test_deployed_modules_listing_covers_app_and_every_chalicelib_package():
    # GIVEN the listing the layout check walks  THEN it holds app.py and a module of each package
    modules = deployed_modules()
    packages = {Path(m).parts[1] for m in modules if m.startswith("chalicelib/") and m.count("/") == 2}
    assert modules[0] == "app.py"
    assert {"aws", "ingest", "retention", "runs", "scoring"} <= packages
