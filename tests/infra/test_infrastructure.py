"""The deployment's Terraform holds together: a static stand-in for `terraform validate`.

`terraform validate` needs the AWS provider, which this machine cannot download, so these tests read the
Terraform JSON themselves. They check the hand-written files in infra/ alone, and, once `make package` has
written build/package (chalice.tf.json, patched, with terraform.tfvars.json beside it), the directory
Terraform will actually run in: every reference resolves, every variable is set, and the names the
infrastructure creates are the names the functions are configured with.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from chalicelib import observability
from chalicelib.aws.bucket import (
    ATTEMPTS_PREFIX,
    CHECKPOINT_PREFIX,
    CLOSED_PREFIX,
    DEAD_LETTER_PREFIX,
    LEDGER_PREFIX,
    LIFT_REPORT_KEY,
    QUARANTINE_PREFIX,
    REJECTED_PREFIX,
    RUNS_PREFIX,
)
from chalicelib.aws.tables import TTL_ATTRIBUTE
from chalicelib.lookup.tier_index import KEY_ATTRIBUTE
from chalicelib.reporting.drift import ALARM_AT
from chalicelib.settings import DEFAULT_INCOMING_PREFIX, Settings
from churnguard_offline import bootstrap
from tests.conftest import ROOT

INFRA = ROOT / "infra"
CHECKOV_CONFIG = ROOT / ".checkov.yaml"
CHALICE_CONFIG = ROOT / ".chalice" / "config.json"

# What scripts/package.py writes into terraform.tfvars.json (the contract between it and infra/).
TFVARS_KEYS = frozenset(
    {
        "app_name",
        "stage",
        "behaviour_bucket",
        "incoming_prefix",
        "risk_table",
        "state_table",
        "queue_high",
        "queue_medium",
        "queue_account_manager",
        "lambda_timeout_seconds",
        "lambda_function_names",
        "files_queue",
        "files_delivery",
    }
)
# The variables behind the names the infrastructure creates: each is named after the Settings field the
# functions read from their environment (BEHAVIOUR_BUCKET -> Settings.behaviour_bucket, ...).
NAME_VARIABLES = (
    "behaviour_bucket",
    "incoming_prefix",
    "risk_table",
    "state_table",
    "queue_high",
    "queue_medium",
    "queue_account_manager",
)
QUEUE_VARIABLES = {"high": "queue_high", "medium": "queue_medium", "account_manager": "queue_account_manager"}
# Declared in chalice.tf.json and used by infra/: checked against the real file once the package exists.
FROM_CHALICE = frozenset({"data.aws_caller_identity.chalice", "data.aws_partition.chalice", "data.aws_region.chalice"})
# Prefixes whose objects the code reads back for as long as the deployment lives: never expired.
NEVER_EXPIRED = (
    DEFAULT_INCOMING_PREFIX,
    CHECKPOINT_PREFIX,
    ATTEMPTS_PREFIX,
    DEAD_LETTER_PREFIX,
    CLOSED_PREFIX,
    LIFT_REPORT_KEY,
    Settings.opt_out_key,
)
# Run records nobody reads back after a while: these expire (ledger/: the ledger of earlier versions, now in DynamoDB).
EXPIRED = (REJECTED_PREFIX, QUARANTINE_PREFIX, RUNS_PREFIX, LEDGER_PREFIX)
LAMBDA_MAX_TIMEOUT_SECONDS = 900
# Chalice's name for the function behind the REST API (the risk lookup's routes).
API_FUNCTION = "api_handler"
# Built-in functions of Terraform 1.3 (versions.tf.json's floor); a later one would break older releases.
# (One word per function: the quoted list ruff suggests would run to a hundred lines.)
TERRAFORM_FUNCTIONS = frozenset(
    """abs ceil floor log max min parseint pow signum chomp endswith format formatlist indent join lower regex
    regexall replace split startswith strrev substr title trim trimprefix trimsuffix trimspace upper alltrue
    anytrue chunklist coalesce coalescelist compact concat contains distinct element flatten index keys length
    lookup matchkeys merge one range reverse setintersection setproduct setsubtract setunion slice sort sum
    transpose values zipmap base64decode base64encode base64gzip csvdecode jsondecode jsonencode
    textdecodebase64 textencodebase64 urlencode yamldecode yamlencode abspath dirname pathexpand basename file
    fileexists fileset filebase64 templatefile formatdate timeadd timestamp base64sha256 base64sha512 bcrypt
    filebase64sha256 filebase64sha512 filemd5 filesha1 filesha256 filesha512 md5 rsadecrypt sha1 sha256 sha512
    uuid uuidv5 cidrhost cidrnetmask cidrsubnet cidrsubnets can nonsensitive sensitive tobool tolist tomap
    tonumber toset tostring try""".split()  # noqa: SIM905
)

REFERENCE = re.compile(
    r"(?<![\w.])(?:(var|local)\.([A-Za-z0-9_-]+)"
    r"|data\.([a-z0-9_]+)\.([A-Za-z0-9_-]+)"
    r"|((?:aws|null)_[a-z0-9_]+)\.([A-Za-z0-9_-]+))"
)
FUNCTION_CALL = re.compile(r"(?<![\w.])([a-z_][a-z0-9_]*)\s*\(")
STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"')
ONLY_LOCAL = re.compile(r"\$\{\s*local\.([A-Za-z0-9_-]+)\s*\}")


# ---- reading Terraform JSON ------------------------------------------------------------------------
@dataclass
class Config:
    """A set of Terraform JSON files read as Terraform would merge them."""

    files: dict[str, dict[str, Any]]

    def blocks(self, kind: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """Yield (file, name, body) for each top-level `kind` block (variable, output)."""
        for file, doc in self.files.items():
            for name, body in doc.get(kind, {}).items():
                if name != "//":
                    yield file, name, body

    def resources(self, kind: str = "resource") -> dict[str, dict[str, Any]]:
        """Return every resource (or data source) by address, e.g. `aws_s3_bucket.behaviour`."""
        found = {}
        for doc in self.files.values():
            for rtype, named in doc.get(kind, {}).items():
                for name, body in named.items():
                    found[f"{rtype}.{name}"] = body
        return found

    def of_type(self, rtype: str) -> dict[str, dict[str, Any]]:
        """Return the resources of one type by name."""
        return {a.split(".", 1)[1]: body for a, body in self.resources().items() if a.split(".", 1)[0] == rtype}

    @property
    def locals(self) -> dict[str, Any]:
        merged = {}
        for doc in self.files.values():
            merged.update({k: v for k, v in doc.get("locals", {}).items() if k != "//"})
        return merged

    @property
    def variables(self) -> dict[str, dict[str, Any]]:
        return {name: body for _, name, body in self.blocks("variable")}

    def declared(self) -> list[str]:
        """Return every address declared, once per declaration (duplicates show as repeats)."""
        names = [f"var.{n}" for _, n, _ in self.blocks("variable")]
        names += [f"output.{n}" for _, n, _ in self.blocks("output")]
        for doc in self.files.values():
            names += [f"local.{n}" for n in doc.get("locals", {}) if n != "//"]
            for kind, prefix in (("resource", ""), ("data", "data.")):
                names += [f"{prefix}{t}.{n}" for t, named in doc.get(kind, {}).items() for n in named]
        return names

    def expressions(self) -> Iterator[tuple[str, str]]:
        """Yield (where, interpolation) for every `${...}` in every string but comments."""
        for file, doc in self.files.items():
            for where, text in strings(doc, file):
                for expression in interpolations(text, where):
                    yield where, expression

    def references(self) -> Iterator[tuple[str, str]]:
        """Yield (where, address) for each reference in an expression or a depends_on list."""
        for where, expression in self.expressions():
            for match in REFERENCE.finditer(expression):
                yield where, address(match)
        for rtype, body in self.resources().items():
            for dependency in body.get("depends_on", []):
                yield f"{rtype}.depends_on", dependency


def read(directory: Path, names: list[str] | None = None) -> Config:
    """Read the *.tf.json files of `directory` (or only `names`)."""
    paths = [directory / n for n in names] if names else sorted(directory.glob("*.tf.json"))
    return Config({p.name: json.loads(p.read_text()) for p in paths})


def strings(node: Any, where: str) -> Iterator[tuple[str, str]]:
    """Yield (where, text) for every string value under `node`, skipping "//" comments."""
    if isinstance(node, str):
        yield where, node
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from strings(item, f"{where}[{i}]")
    elif isinstance(node, dict):
        for key, value in node.items():
            if key != "//":
                yield from strings(value, f"{where}.{key}")


def interpolations(text: str, where: str = "") -> list[str]:
    """Return the contents of the outermost `${...}` of a template string (nested ones stay inside)."""
    found, i = [], 0
    while (start := text.find("${", i)) >= 0:
        if start > 0 and text[start - 1] == "$":  # `$${` is a literal `${`
            i = start + 2
            continue
        depth, end = 0, start + 1
        while end < len(text):
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            if depth == 0:
                break
            end += 1
        else:
            raise AssertionError(f"{where}: unclosed interpolation in {text!r}")
        found.append(text[start + 2 : end])
        i = end + 1
    return found


def address(match: re.Match[str]) -> str:
    kind, name, data_type, data_name, rtype, rname = match.groups()
    if kind:
        return f"{kind}.{name}"
    if data_type:
        return f"data.{data_type}.{data_name}"
    return f"{rtype}.{rname}"


def resolve(value: Any, config: Config) -> Any:
    """Follow a value that is just `${local.X}` to what the local holds."""
    while isinstance(value, str) and (match := ONLY_LOCAL.fullmatch(value)):
        value = config.locals[match.group(1)]
    return value


def number(value: Any, config: Config) -> float:
    """Return the literal number a value is, or holds through locals; fail on anything computed."""
    value = resolve(value, config)
    assert isinstance(value, int | float) and not isinstance(value, bool), f"not a literal number: {value!r}"
    return value


def operand(text: str, config: Config) -> float:
    """Return the number an operand inside an expression stands for: a literal or a local holding one."""
    if re.fullmatch(r"\d+", text):
        return int(text)
    assert text.startswith("local."), f"not a literal or a local: {text!r}"
    return number(config.locals[text.removeprefix("local.")], config)


def variables_in(value: Any, config: Config) -> set[str]:
    """Return the variables an expression refers to, through the locals it refers to."""
    found: set[str] = set()
    for _, text in strings(value, ""):
        for expression in interpolations(text):
            for match in REFERENCE.finditer(expression):
                ref = address(match)
                if ref.startswith("var."):
                    found.add(ref.removeprefix("var."))
                elif ref.startswith("local."):
                    found |= variables_in(config.locals[ref.removeprefix("local.")], config)
    return found


def refers_to(value: Any, target: str) -> bool:
    return isinstance(value, str) and any(
        address(m) == target for e in interpolations(value) for m in REFERENCE.finditer(e)
    )


def listed(value: Any) -> list[Any]:
    """Return a nested block's instances: JSON may give one block as an object or several as a list."""
    return value if isinstance(value, list) else [value]


# ---- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def infra() -> Config:
    return read(INFRA)


@dataclass
class Package:
    path: Path
    directory: Config
    tfvars: dict[str, Any]
    stage_env: dict[str, str]
    lambda_timeout: int


@pytest.fixture(scope="module")
def package() -> Package:
    """The directory `make package` wrote: chalice.tf.json (patched) and tfvars, with the current infra/.

    `make test` builds it first and names it in CHURNGUARD_PACKAGE_DIR: then a missing build fails.
    """
    named = os.environ.get("CHURNGUARD_PACKAGE_DIR")
    path = Path(named) if named else ROOT / "build" / "package"
    if not (path / "chalice.tf.json").exists():
        if named:
            pytest.fail(f"CHURNGUARD_PACKAGE_DIR={named} holds no chalice.tf.json; `make package` should have built it")
        pytest.skip("build/package/chalice.tf.json does not exist: run `make package` (make test does)")
    others = sorted(p.name for p in path.glob("*.tf.json") if not (INFRA / p.name).exists())
    directory = read(path, others)
    directory.files.update(read(INFRA).files)  # the current infra/, even if the package's copy is stale
    tfvars = json.loads((path / "terraform.tfvars.json").read_text())
    config = json.loads(CHALICE_CONFIG.read_text())
    stage = config["stages"][tfvars["stage"]]
    env = {**config.get("environment_variables", {}), **stage.get("environment_variables", {})}
    timeout = stage.get("lambda_timeout", config.get("lambda_timeout", 60))  # chalice's default is 60 s
    return Package(path, directory, tfvars, env, timeout)


def infra_files() -> list[Path]:
    return sorted(INFRA.glob("*.tf.json"))


# ---- every file parses; every reference resolves ----------------------------------------------------
def test_infra_holds_the_terraform_files():
    assert {p.name for p in infra_files()} >= {"churnguard.tf.json", "versions.tf.json"}


@pytest.mark.parametrize("path", infra_files(), ids=lambda p: p.name)
def test_every_infra_file_is_json_formatted_with_two_space_indentation(path):
    text = path.read_text()
    document = json.loads(text)
    assert isinstance(document, dict), "a Terraform JSON file is one object"
    assert text == json.dumps(document, indent=2, ensure_ascii=False) + "\n", "format it as json.dumps(indent=2)"


def test_every_package_file_parses_as_json(package):
    for path in [*package.path.glob("*.tf.json"), package.path / "terraform.tfvars.json"]:
        assert isinstance(json.loads(path.read_text()), dict), path.name


def test_the_package_carries_the_current_infra_files(package):
    for path in infra_files():
        copy = package.path / path.name
        assert copy.exists() and copy.read_text() == path.read_text(), f"{copy} is stale: run `make package`"


def unknown_functions(config: Config) -> list[str]:
    """Return "where: name()" for each call of a function Terraform 1.3 does not have (literals aside)."""
    return [
        f"{where}: {name}()"
        for where, expression in config.expressions()
        for name in FUNCTION_CALL.findall(STRING_LITERAL.sub('""', expression))
        if name not in TERRAFORM_FUNCTIONS
    ]


def test_every_interpolation_is_balanced_and_calls_only_terraform_functions(infra):
    assert not unknown_functions(infra)  # (an unbalanced `${` fails while the expressions are read)


def test_every_reference_in_infra_resolves_to_infra_or_to_what_chalice_generates(infra):
    declared = set(infra.declared()) | FROM_CHALICE
    unresolved = {(where, ref) for where, ref in infra.references() if ref not in declared}
    assert not unresolved, f"references to nothing declared: {sorted(unresolved)}"


def test_every_reference_in_the_package_resolves(package):
    declared = set(package.directory.declared())
    assert declared >= FROM_CHALICE, "chalice.tf.json no longer declares what infra/ uses from it"
    unresolved = {(where, ref) for where, ref in package.directory.references() if ref not in declared}
    assert not unresolved, f"references to nothing declared: {sorted(unresolved)}"
    assert not unknown_functions(package.directory)


def test_nothing_is_declared_twice_in_the_package(package):
    names = package.directory.declared()
    assert not {n for n in names if names.count(n) > 1}


def comments_in(node: Any, where: str) -> Iterator[str]:
    """Yield where a "//" property sits anywhere under `node`."""
    if isinstance(node, dict):
        if "//" in node:
            yield where
        for key, value in node.items():
            yield from comments_in(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from comments_in(item, f"{where}[{i}]")


def test_comments_sit_only_where_terraform_ignores_them(infra):
    # Terraform skips "//" in block bodies only; in a label level it is a block name, in a value a key.
    for file, doc in infra.files.items():
        for kind in ("resource", "data"):
            for rtype, named in doc.get(kind, {}).items():
                assert rtype != "//" and "//" not in named, f"{file}: a comment where a {kind} name goes"
                for name, body in named.items():
                    for key in ("tags", "environment"):
                        assert not list(comments_in(body.get(key), key)), f"{rtype}.{name}.{key}: a comment in a value"
        for kind in ("variable", "output"):
            assert "//" not in doc.get(kind, {}), f"{file}: a comment where a {kind} name goes"
            for name, body in doc.get(kind, {}).items():
                for key in ("default", "value"):
                    assert not list(comments_in(body.get(key), "")), f"{kind}.{name}.{key}: a comment in a value"
        for name, value in doc.get("locals", {}).items():
            assert not list(comments_in(value, "")), f"local.{name}: a comment in a value"


def test_each_is_used_only_in_resources_with_for_each(infra):
    for kind in ("resource", "data"):
        for address_, body in infra.resources(kind).items():
            if "for_each" in body:
                continue
            uses_each = [e for _, t in strings(body, address_) for e in interpolations(t) if "each." in e]
            assert not uses_each, f"{address_} uses each.* without for_each"
    for where, expression in infra.expressions():
        if ".locals." in where or ".output." in where:
            assert "each." not in expression, f"{where}: each.* outside a resource"


# ---- variables and terraform.tfvars.json ----------------------------------------------------------
def test_every_variable_used_is_declared_and_every_declared_one_is_used(infra):
    used = {ref.removeprefix("var.") for _, ref in infra.references() if ref.startswith("var.")}
    declared = set(infra.variables)
    assert used - declared == set(), "used but not declared"
    assert declared - used == set(), "declared but never used"


def test_variables_are_typed_described_and_the_ones_the_package_does_not_set_have_defaults(infra):
    for name, body in infra.variables.items():
        assert body.get("type") and body.get("description"), f"variable {name} needs a type and a description"
    variables = infra.variables
    assert set(variables) >= TFVARS_KEYS, "every key scripts/package.py writes has a variable"
    unset = {n for n, body in variables.items() if "default" not in body} - TFVARS_KEYS
    assert not unset, f"variables neither in terraform.tfvars.json nor defaulted: {sorted(unset)}"
    assert variables["queue_account_manager"]["default"] == ""
    assert variables["log_retention_days"]["default"] == 30


def test_the_tfvars_set_exactly_the_declared_variables_with_their_types(package):
    variables = package.directory.variables
    assert set(package.tfvars) <= set(variables), "tfvars keys with no variable"
    required = {n for n, body in variables.items() if "default" not in body}
    assert required <= set(package.tfvars), "variables without default missing from tfvars"
    kinds = {"string": str, "number": int | float, "list(string)": list}
    for name, value in package.tfvars.items():
        assert isinstance(value, kinds[variables[name]["type"]]), f"{name} = {value!r}"
    assert all(isinstance(n, str) for n in package.tfvars["lambda_function_names"])


# ---- the behaviour bucket and the artifacts bucket -------------------------------------------------
def controls_of(infra: Config, rtype: str, bucket: str) -> list[dict[str, Any]]:
    """Return the separate resources of `rtype` that configure aws_s3_bucket.`bucket`."""
    target = f"aws_s3_bucket.{bucket}"
    return [body for body in infra.of_type(rtype).values() if refers_to(body.get("bucket"), target)]


def plain_http_denials(infra: Config, policy: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the statements of a bucket policy's document that deny requests made without TLS."""
    document = re.fullmatch(r"\$\{data\.aws_iam_policy_document\.([\w-]+)\.json\}", policy["policy"])
    assert document, "the bucket policy is an aws_iam_policy_document"
    statements = listed(infra.resources("data")[f"aws_iam_policy_document.{document.group(1)}"]["statement"])
    return [
        s
        for s in statements
        if s["effect"] == "Deny"
        and any(c["variable"] == "aws:SecureTransport" and c["values"] == ["false"] for c in listed(s["condition"]))
    ]


@pytest.mark.parametrize("bucket", ["behaviour", "artifacts"])
def test_the_bucket_is_versioned_encrypted_private_and_tls_only(infra, bucket):
    (versioning,) = controls_of(infra, "aws_s3_bucket_versioning", bucket)
    assert versioning["versioning_configuration"]["status"] == "Enabled"

    (encryption,) = controls_of(infra, "aws_s3_bucket_server_side_encryption_configuration", bucket)
    (default,) = [r["apply_server_side_encryption_by_default"] for r in listed(encryption["rule"])]
    assert default["sse_algorithm"] in ("AES256", "aws:kms")
    assert "kms_master_key_id" not in default, "no customer key: the functions' policy has no kms grants"

    (public,) = controls_of(infra, "aws_s3_bucket_public_access_block", bucket)
    for setting in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"):
        assert public[setting] is True, setting

    (ownership,) = controls_of(infra, "aws_s3_bucket_ownership_controls", bucket)
    assert listed(ownership["rule"])[0]["object_ownership"] == "BucketOwnerEnforced"

    (policy,) = controls_of(infra, "aws_s3_bucket_policy", bucket)
    deny_plain_http = plain_http_denials(infra, policy)
    assert deny_plain_http, "no statement denies requests without TLS"
    resources = set(deny_plain_http[0]["resources"])
    assert resources == {f"${{aws_s3_bucket.{bucket}.arn}}", f"${{aws_s3_bucket.{bucket}.arn}}/*"}


def behaviour_lifecycle_rules(infra: Config) -> list[dict[str, Any]]:
    (lifecycle,) = controls_of(infra, "aws_s3_bucket_lifecycle_configuration", "behaviour")
    return [rule for rule in listed(lifecycle["rule"]) if rule["status"] == "Enabled"]


def rule_prefix(rule: dict[str, Any]) -> str:
    """Return the key prefix a lifecycle rule applies to ("" for every object)."""
    filters = listed(rule.get("filter", {}))
    return filters[0].get("prefix", "") if filters else rule.get("prefix", "")


def test_the_behaviour_bucket_never_expires_what_the_code_reads_back(infra):
    stages = json.loads(CHALICE_CONFIG.read_text())["stages"].values()
    incoming = {Settings.from_env(s["environment_variables"]).incoming_prefix for s in stages}
    for rule in behaviour_lifecycle_rules(infra):
        expiration = listed(rule.get("expiration", {}))[0]
        if not ({"days", "date"} & set(expiration)):
            continue  # removes only expired delete markers: nothing current is deleted
        prefix = rule_prefix(rule)
        for kept in (*NEVER_EXPIRED, *incoming):
            overlaps = kept.startswith(prefix) or prefix.startswith(kept)
            assert not overlaps, f"rule {rule['id']} expires {prefix!r}, which holds {kept!r}"


def test_the_behaviour_bucket_expires_old_run_records_and_old_versions(infra):
    rules = behaviour_lifecycle_rules(infra)
    expiring = {rule_prefix(r): listed(r["expiration"])[0].get("days") for r in rules if "expiration" in r}
    for prefix in EXPIRED:
        assert isinstance(expiring.get(prefix), int) and expiring[prefix] >= 30, f"{prefix} should expire"
    everything = [r for r in rules if rule_prefix(r) == ""]
    assert everything, "one rule applies to every object"
    assert all(listed(r["noncurrent_version_expiration"])[0]["noncurrent_days"] >= 1 for r in everything)
    assert all(listed(r["abort_incomplete_multipart_upload"])[0]["days_after_initiation"] >= 1 for r in everything)


def test_the_deployment_package_is_uploaded_to_the_versioned_artifacts_bucket(infra):
    deployment = infra.of_type("aws_s3_object")["deployment"]
    assert refers_to(deployment["bucket"], "aws_s3_bucket.artifacts")
    assert deployment["key"] == "${var.app_name}-${var.stage}/deployment.zip"
    source = resolve(deployment["source"], infra)
    assert source == "${path.module}/deployment.zip"
    assert re.fullmatch(r"\$\{filemd5\((.+)\)\}", deployment["source_hash"]), "a new zip uploads a new version"
    assert "aws_s3_bucket_versioning.artifacts" in deployment["depends_on"], "the first upload gets a version id"
    bucket = infra.of_type("aws_s3_bucket")["artifacts"]["bucket"]
    assert "${data.aws_caller_identity.chalice.account_id}" in bucket, "bucket names are global: the account is in it"


def test_the_functions_deploy_from_the_uploaded_package_version(package):
    functions = package.directory.of_type("aws_lambda_function")
    assert functions
    for name, function in functions.items():
        assert "filename" not in function, f"{name}: the zip is over Lambda's 50 MB direct-upload limit"
        assert function["s3_bucket"] == "${aws_s3_object.deployment.bucket}"
        assert function["s3_key"] == "${aws_s3_object.deployment.key}"
        assert function["s3_object_version"] == "${aws_s3_object.deployment.version_id}"
        assert "deployment.zip" in function["source_code_hash"]


# ---- DynamoDB --------------------------------------------------------------------------------------
def test_every_table_is_on_demand_keyed_by_user_id_recoverable_encrypted_and_expires_by_ttl(infra):
    tables = infra.of_type("aws_dynamodb_table")
    assert tables
    for name, table in tables.items():
        assert table["billing_mode"] == "PAY_PER_REQUEST", name
        assert table["hash_key"] == "user_id" and "range_key" not in table, name
        # user_id, and the tier index's key (test_the_tier_index_is_declared_as_bootstrap_creates_it)
        assert listed(table["attribute"]) == [{"name": "user_id", "type": "S"}, {"name": KEY_ATTRIBUTE, "type": "S"}]
        assert listed(table["point_in_time_recovery"])[0]["enabled"] is True, name
        assert listed(table["server_side_encryption"])[0]["enabled"] is True, name
        assert "kms_key_arn" not in listed(table["server_side_encryption"])[0], "no customer key"
        assert listed(table["ttl"])[0] == {"attribute_name": TTL_ATTRIBUTE, "enabled": True}, name


def test_the_tier_index_is_declared_as_bootstrap_creates_it(infra):
    (table,) = infra.of_type("aws_dynamodb_table").values()
    (index,) = listed(table["global_secondary_index"])
    created = bootstrap.tier_index()
    assert index["name"] == created["IndexName"]
    assert [index["hash_key"], index["range_key"]] == [k["AttributeName"] for k in created["KeySchema"]]
    assert index["projection_type"] == created["Projection"]["ProjectionType"] == "INCLUDE"
    assert index["non_key_attributes"] == created["Projection"]["NonKeyAttributes"]
    # Only what a lookup shows is copied into the index: never a shared table's state blob.
    assert not {"state", "applied_runs", "contact_ids"} & set(index["non_key_attributes"])


def test_one_table_is_created_per_distinct_name_so_state_and_risk_may_share_one(infra):
    (table,) = infra.of_type("aws_dynamodb_table").values()
    for_each = resolve(table["for_each"], infra)
    assert re.fullmatch(r"\$\{toset\(\[var\.risk_table, var\.state_table\]\)\}", for_each), for_each
    assert table["name"] == "${each.value}"


# ---- SQS -------------------------------------------------------------------------------------------
def retention_and_dead_letter_queues(infra: Config) -> tuple[dict[str, Any], dict[str, Any]]:
    queues = {n: q for n, q in infra.of_type("aws_sqs_queue").items() if not n.startswith("files")}
    (retention,) = [q for q in queues.values() if "redrive_policy" in q]
    (dead_letter,) = [q for q in queues.values() if "redrive_policy" not in q]
    return retention, dead_letter


def test_every_retention_queue_has_an_encrypted_dead_letter_queue_with_redrive_both_ways(infra):
    retention, dead_letter = retention_and_dead_letter_queues(infra)
    assert retention["for_each"] == dead_letter["for_each"], "one dead-letter queue per retention queue"
    dlq_name = next(n for n, q in infra.of_type("aws_sqs_queue").items() if q is dead_letter)
    redrive = retention["redrive_policy"]
    assert redrive.startswith("${jsonencode(") and f"aws_sqs_queue.{dlq_name}[each.key].arn" in redrive
    assert re.search(r"maxReceiveCount\s*=", redrive)
    allow = dead_letter["redrive_allow_policy"]
    assert '"byQueue"' in allow and "${each.value}" in allow, "only its own source queue redrives into it"
    for queue in (retention, dead_letter):
        assert queue.get("sqs_managed_sse_enabled") is True or "kms_master_key_id" in queue


def test_the_retention_queues_hide_a_message_for_longer_than_the_lambda_timeout(infra):
    retention, _ = retention_and_dead_letter_queues(infra)
    visibility = resolve(retention["visibility_timeout_seconds"], infra)
    match = re.fullmatch(r"\$\{\s*var\.lambda_timeout_seconds\s*\+\s*(.+?)\s*\}", visibility)
    assert match, f"visibility timeout is not the Lambda timeout plus a margin: {visibility!r}"
    margin = operand(match.group(1), infra)
    assert margin >= 0
    # bootstrap gives 960 s for the 900 s the handlers may run at most: the same margin.
    assert margin == bootstrap.VISIBILITY_TIMEOUT_SECONDS - LAMBDA_MAX_TIMEOUT_SECONDS


def test_the_queues_are_set_up_as_bootstrap_sets_them(infra):
    retention, dead_letter = retention_and_dead_letter_queues(infra)
    for queue in (retention, dead_letter):
        assert number(queue["message_retention_seconds"], infra) == bootstrap.MESSAGE_RETENTION_SECONDS
    redrive = retention["redrive_policy"]
    receive = re.search(r"maxReceiveCount\s*=\s*([\w.]+)", redrive).group(1)
    assert operand(receive, infra) == bootstrap.MAX_RECEIVE_COUNT
    name = dead_letter["name"]
    suffix = name.removeprefix("${each.value}")
    assert suffix == bootstrap.DLQ_SUFFIX or resolve(suffix, infra) == bootstrap.DLQ_SUFFIX, name


# ---- names: the infrastructure creates what the functions are configured to use --------------------
def test_the_names_created_come_from_the_variables_named_after_the_functions_environment(infra):
    assert infra.of_type("aws_s3_bucket")["behaviour"]["bucket"] == "${var.behaviour_bucket}"
    (table,) = infra.of_type("aws_dynamodb_table").values()
    assert variables_in(table["for_each"], infra) == {"risk_table", "state_table"}
    retention, dead_letter = retention_and_dead_letter_queues(infra)
    assert retention["name"] == "${each.value}" and dead_letter["name"].startswith("${each.value}")
    destinations = resolve(retention["for_each"], infra)
    (candidates,) = [
        resolve(f"${{{ref}}}", infra)
        for e in interpolations(destinations)
        for ref in map(address, REFERENCE.finditer(e))
        if ref.startswith("local.")
    ]
    assert {d: resolve(v, infra) for d, v in candidates.items()} == {
        d: f"${{var.{v}}}" for d, v in QUEUE_VARIABLES.items()
    }
    assert re.search(r"\bif\s+length\(\w+\)\s*>\s*0\b", destinations), "an unset queue (empty name) gets no queue"


def test_the_tfvars_hold_the_names_the_functions_read_from_their_environment(package):
    # The code's own reading of the stage's environment (defaults included) is what names must match.
    configured = Settings.from_env(package.stage_env)
    for name in NAME_VARIABLES:
        assert package.tfvars[name] == (getattr(configured, name) or ""), name
    functions = package.directory.of_type("aws_lambda_function")
    for function_name, function in functions.items():
        # (the build adds the state machines' ARNs, spelled from their names: see tests/infra/test_state_machines.py)
        env = {k: v for k, v in function["environment"]["variables"].items() if not k.endswith("_STATE_MACHINE_ARN")}
        assert Settings.from_env(env) == configured, function_name
        if function_name == API_FUNCTION:
            # The risk lookup answers through API Gateway (29 s at most); no queue waits out its timeout.
            assert function["timeout"] <= 30 < package.lambda_timeout
            continue
        assert function["timeout"] == package.tfvars["lambda_timeout_seconds"] == package.lambda_timeout
    assert sorted(f["function_name"] for f in functions.values()) == sorted(package.tfvars["lambda_function_names"])


def test_the_s3_trigger_is_on_the_bucket_created_here_and_its_incoming_prefix(package):
    (notification,) = package.directory.of_type("aws_s3_bucket_notification").values()
    assert notification["bucket"] == "${aws_s3_bucket.behaviour.id}"
    # The dev stage's files come through the files queue (FILES_DELIVERY=queue), not straight to the function.
    assert "lambda_function" not in notification
    assert [t["filter_prefix"] for t in notification["queue"]] == [package.tfvars["incoming_prefix"]]
    assert [t["queue_arn"] for t in notification["queue"]] == ["${aws_sqs_queue.files.arn}"]
    for permission in package.directory.of_type("aws_lambda_permission").values():
        if permission["principal"] == "s3.amazonaws.com":
            assert permission["source_arn"].endswith(f":s3:::{package.tfvars['behaviour_bucket']}")


# ---- logs ------------------------------------------------------------------------------------------
def test_every_function_gets_a_log_group_with_a_retention(infra):
    (group,) = infra.of_type("aws_cloudwatch_log_group").values()
    assert group["for_each"] == "${toset(var.lambda_function_names)}"
    assert group["name"] == "/aws/lambda/${each.value}"
    assert group["retention_in_days"] == "${var.log_retention_days}"


# ---- alarms -----------------------------------------------------------------------------------------
def test_every_metric_the_functions_publish_has_an_alarm_on_its_namespace_and_service(infra):
    # GIVEN the metrics the code publishes, and the namespace and service every stage publishes them under
    config = json.loads(CHALICE_CONFIG.read_text())
    variables = infra.variables
    for stage in config["stages"].values():
        env = {**config.get("environment_variables", {}), **stage.get("environment_variables", {})}
        namespace = env.get("POWERTOOLS_METRICS_NAMESPACE", observability.metrics.namespace)
        assert namespace == variables["metrics_namespace"]["default"]
        assert env.get("POWERTOOLS_SERVICE_NAME", observability.SERVICE) == variables["metrics_service"]["default"]
    # WHEN the alarms are read
    alarm = infra.of_type("aws_cloudwatch_metric_alarm")["metrics"]
    alarms = resolve(alarm["for_each"], infra)
    # THEN there is one per metric, on that metric, its namespace and its service dimension
    assert set(alarms) == set(observability.METRICS)
    assert alarm["metric_name"] == "${each.key}" and alarm["namespace"] == "${var.metrics_namespace}"
    assert alarm["dimensions"] == {"service": "${var.metrics_service}"}, "EMF metrics carry exactly this dimension"
    assert alarm["statistic"] == "Sum" and alarm["comparison_operator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["treat_missing_data"] == "notBreaching", "the metrics are published only when something happens"
    for name, settings in alarms.items():
        assert settings["threshold"] >= 1 and settings["period_seconds"] % 60 == 0, name
        assert settings["description"], name
    # AND each notifies the optional topic, going off and coming back
    assert alarm["alarm_actions"] == alarm["ok_actions"] == "${local.alarm_actions}"
    assert variables_in(infra.locals["alarm_actions"], infra) == {"alarm_topic_arn"}


def test_drift_metrics_have_an_alarm_on_their_daily_maximum_at_the_alarm_psi(infra):
    # GIVEN the alarms beside the counted metrics' (one PSI a scheduled run, below 1: a sum would mislead)
    alarm = infra.of_type("aws_cloudwatch_metric_alarm")["drift"]
    alarms = resolve(alarm["for_each"], infra)
    # THEN each drift metric has one, on its maximum over a day, going off at the report's alarm level
    assert set(alarms) == set(observability.DRIFT_METRICS)
    assert alarm["statistic"] == "Maximum" and alarm["period"] == 86400
    assert alarm["comparison_operator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["dimensions"] == {"service": "${var.metrics_service}"}
    assert alarm["alarm_actions"] == alarm["ok_actions"] == "${local.alarm_actions}"
    assert {a["threshold"] for a in alarms.values()} == {ALARM_AT}
    assert all(a["description"] for a in alarms.values())


# ---- checkov ---------------------------------------------------------------------------------------
def test_checkov_scans_the_package_offline_and_every_skip_says_why():
    config = yaml.safe_load(CHECKOV_CONFIG.read_text())
    assert config["framework"] == ["terraform_json"]
    assert config["directory"] == ["build/package"]
    assert config["skip-download"] is True, "no network here: checkov must not fetch policy mappings"
    lines = CHECKOV_CONFIG.read_text().splitlines()
    for key in ("skip-check", "skip-path"):
        items = config.get(key, [])
        assert len(items) == len(set(items)), f"{key} lists an entry twice"
        for item in items:
            (at,) = [i for i, line in enumerate(lines) if re.fullmatch(rf"\s*-\s*{re.escape(item)}\s*(#.*)?", line)]
            reason = [lines[at].partition("#")[2]]  # beside it, or the comment lines right above it
            above = at - 1
            while above >= 0 and lines[above].strip().startswith("#"):
                reason.append(lines[above].strip().lstrip("#"))
                above -= 1
            assert len(" ".join(reason).split()) >= 6, f"{key} {item} has no reason above it or beside it"
    for check in config["skip-check"]:
        assert re.fullmatch(r"CKV2?_AWS_\d+", check), f"skip a single check, not {check!r}"
