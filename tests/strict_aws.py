"""A strict-AWS layer in front of moto: the answers real AWS gives that moto does not (docs/layout.md, Tests).

botocore handlers on every new session, ahead of moto's responder (moto answers in `before-send`; these run at
`before-parameter-build`, `before-call` and `after-call`, so a refused request never reaches moto's state):

- S3 GetObject/HeadObject of a missing key answers 403 AccessDenied (HEAD: 403 Forbidden) unless the stage's own
  IAM policy grants `s3:ListBucket` on the bucket for that request. The reading used: the 404-or-403 decision is
  the ListBucket permission evaluated for the GET's own request, which carries no `s3:prefix`, so a grant whose
  condition needs `s3:prefix` (StringLike, StringEquals, ...) does not count; a grant without one, or one whose
  condition holds when the key is absent (...IfExists, a negated operator, Null true), does.
- S3 PutObject/CopyObject/CreateMultipartUpload of a key over 1,024 UTF-8 bytes: 400 KeyTooLongError.
- SQS: a message (body or attribute) holding a character outside #x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD |
  #x10000-#x10FFFF fails with InvalidMessageContents, one over 256 KiB with its attributes with
  BatchEntryTooLong; in SendMessageBatch that entry alone fails (SenderFault) and the others are sent. A batch
  whose messages together pass 256 KiB fails whole with BatchRequestTooLong.
- DynamoDB: PutItem, UpdateItem (the item as updated) and BatchWriteItem of an item over 400 KB fail with
  ValidationException, as does a BatchWriteItem of more than 25 requests; nothing is written.
- DynamoDB: a conditional write is atomic, as in DynamoDB: moto checks the condition and then writes with no lock,
  so two threads could both pass one `attribute_not_exists` (both taking one run's lease). The layer runs moto's
  item writes one at a time.

Enable it with `strict_aws(policy)` around `mock_aws()` (the integration fixtures do), or `StrictAws` directly.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.handlers import BUILTIN_HANDLERS

MAX_KEY_BYTES = 1024
MAX_SQS_BYTES = 256 * 1024
MAX_ITEM_BYTES = 400 * 1024
MAX_BATCH_WRITE = 25
# The characters SQS takes in a message body and in string attribute values.
SQS_REFUSED = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
SQS_REFUSED_MESSAGE = (
    "Invalid characters found. Valid unicode characters are #x9 | #xA | #xD | #x20 to #xD7FF | "
    "#xE000 to #xFFFD | #x10000 to #x10FFFF"
)
MISSING_KEY_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_PARAMS = "strict_aws_params"
_FAILED = "strict_aws_failed"
_BEFORE = "strict_aws_before"


class PolicyError(ValueError):
    """The policy holds a condition operator this evaluator does not know: it refuses to guess."""


# ---- IAM policy evaluation ------------------------------------------------------------------------------
def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _glob(pattern: str, value: str, case_sensitive: bool = True) -> bool:
    """Return whether an IAM wildcard pattern (`*`, `?`) matches `value`."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, flags=0 if case_sensitive else re.IGNORECASE) is not None


_STRING_OPERATORS = {
    "StringEquals": lambda want, have: want == have,
    "StringLike": _glob,
    "StringEqualsIgnoreCase": lambda want, have: want.lower() == have.lower(),
}


def _condition_holds(operator: str, key: str, wanted: list[str], context: dict[str, list[str]]) -> bool:
    """Return whether one condition operator holds for one key, as IAM evaluates it.

    A key absent from the request context fails every operator except the negated ones, `...IfExists` and
    `Null` (IAM User Guide, condition operators).
    """
    if operator == "Null":
        return all((key not in context) == (str(w).lower() == "true") for w in wanted)
    base = operator.removesuffix("IfExists")
    if_exists = base != operator
    negated = base.replace("Not", "", 1) if "Not" in base else None
    positive = negated or base
    if positive not in _STRING_OPERATORS:
        raise PolicyError(f"condition operator {operator} is not evaluated by the strict-AWS layer")
    if key not in context:
        return if_exists or negated is not None
    match = any(_STRING_OPERATORS[positive](str(w), v) for w in wanted for v in context[key])
    return not match if negated else match


class IamPolicy:
    """An identity policy document, evaluated for one action on one resource with a request context."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.statements = _listed(document.get("Statement", []))

    @classmethod
    def of_stage(cls, root: Path, stage: str = "dev") -> IamPolicy:
        """Return the policy file the stage names in .chalice/config.json."""
        config = json.loads((root / ".chalice" / "config.json").read_text())["stages"][stage]
        return cls(json.loads((root / ".chalice" / config["iam_policy_file"]).read_text()))

    def allows(self, action: str, resource: str, context: dict[str, list[str]] | None = None) -> bool:
        """Return True when some statement allows the request and none denies it."""
        context = context or {}
        effects = [s["Effect"] for s in self.statements if self._applies(s, action, resource, context)]
        return "Allow" in effects and "Deny" not in effects

    @staticmethod
    def _applies(statement: dict[str, Any], action: str, resource: str, context: dict[str, list[str]]) -> bool:
        if "NotAction" in statement:
            acts = not any(_glob(a, action, False) for a in _listed(statement["NotAction"]))
        else:
            acts = any(_glob(a, action, False) for a in _listed(statement.get("Action", [])))
        if "NotResource" in statement:
            on = not any(_glob(r, resource) for r in _listed(statement["NotResource"]))
        else:
            on = any(_glob(r, resource) for r in _listed(statement.get("Resource", [])))
        conditions = statement.get("Condition", {})
        holds = all(
            _condition_holds(op, key, [str(w) for w in _listed(wanted)], context)
            for op, keys in conditions.items()
            for key, wanted in keys.items()
        )
        return acts and on and holds

    def missing_key_answers_404(self, bucket: str) -> bool:
        """Return whether a GET/HEAD of a missing key in `bucket` answers 404 (else 403): ListBucket on the
        bucket, for a request that carries no s3:prefix."""
        return self.allows("s3:ListBucket", f"arn:aws:s3:::{bucket}", {})


# ---- answers ----------------------------------------------------------------------------------------------
def _response(status: int, parsed: dict[str, Any]) -> tuple[AWSResponse, dict[str, Any]]:
    """Return the (http, parsed) pair a `before-call` handler answers with instead of the service."""
    http = AWSResponse("https://strict-aws.invalid/", status, {}, None)
    http._content = b""
    parsed.setdefault("ResponseMetadata", {})["HTTPStatusCode"] = status
    return http, parsed


def _error(status: int, code: str, message: str) -> tuple[AWSResponse, dict[str, Any]]:
    return _response(status, {"Error": {"Code": code, "Message": message}})


def _turn_into_error(http: AWSResponse, parsed: dict[str, Any], status: int, code: str, message: str) -> None:
    """Rewrite a response botocore is about to read into an error (for rules decided after the service)."""
    http.status_code = status
    for key in [k for k in parsed if k != "ResponseMetadata"]:
        del parsed[key]
    parsed["Error"] = {"Code": code, "Message": message}
    parsed.setdefault("ResponseMetadata", {})["HTTPStatusCode"] = status


# ---- DynamoDB item size (Developer Guide, item sizes) ---------------------------------------------------
def _number_bytes(text: str) -> int:
    digits = text.lstrip("-").replace(".", "").split("e")[0].split("E")[0].strip("0") or "0"
    return (len(digits) + 1) // 2 + 1


def _binary_bytes(data: str | bytes) -> int:
    """Return the length of a binary value: base64 text on the wire, raw bytes in moto's own items."""
    return len(data) if isinstance(data, bytes) else len(base64.b64decode(data))


def attribute_bytes(value: dict[str, Any]) -> int:
    """Return the bytes DynamoDB counts for one typed attribute value."""
    ((kind, data),) = value.items()
    sizes = {
        "S": lambda: len(data.encode()),
        "N": lambda: _number_bytes(data),
        "B": lambda: _binary_bytes(data),
        "BOOL": lambda: 1,
        "NULL": lambda: 1,
        "SS": lambda: sum(len(s.encode()) for s in data),
        "NS": lambda: sum(_number_bytes(n) for n in data),
        "BS": lambda: sum(_binary_bytes(b) for b in data),
        "L": lambda: 3 + sum(1 + attribute_bytes(v) for v in data),
        "M": lambda: 3 + sum(len(k.encode()) + 1 + attribute_bytes(v) for k, v in data.items()),
    }
    return sizes[kind]()


def item_bytes(item: dict[str, Any]) -> int:
    """Return the size DynamoDB counts for an item: each attribute's name and value."""
    return sum(len(name.encode()) + attribute_bytes(value) for name, value in item.items())


# ---- SQS entries ------------------------------------------------------------------------------------------
def sqs_entry_bytes(entry: dict[str, Any]) -> int:
    """Return the bytes SQS counts for a message: the body plus each attribute's name, type and value."""
    size = len(entry.get("MessageBody", "").encode())
    for name, attr in entry.get("MessageAttributes", {}).items():
        value = attr.get("StringValue")
        raw = value.encode() if value is not None else base64.b64decode(attr.get("BinaryValue", ""))
        size += len(name.encode()) + len(attr.get("DataType", "").encode()) + len(raw)
    return size


def sqs_refusal(entry: dict[str, Any]) -> tuple[str, str] | None:
    """Return (code, message) when SQS would refuse this message, else None."""
    texts = [entry.get("MessageBody", "")]
    texts += [a["StringValue"] for a in entry.get("MessageAttributes", {}).values() if "StringValue" in a]
    if any(SQS_REFUSED.search(text) for text in texts):
        return "InvalidMessageContents", SQS_REFUSED_MESSAGE
    size = sqs_entry_bytes(entry)
    if size > MAX_SQS_BYTES:
        return "BatchEntryTooLong", f"Message must be shorter than {MAX_SQS_BYTES} bytes; it is {size}."
    return None


# ---- the layer ----------------------------------------------------------------------------------------------
class StrictAws:
    """The rules, applied to every botocore client created while the layer is active."""

    def __init__(self, policy: IamPolicy) -> None:
        self.policy = policy
        self.refused: list[tuple[str, str]] = []  # (operation, error code) of each answer the layer changed
        self.aliases: dict[str, str] = {}
        self._lock = threading.Lock()

    def same_policy_as(self, bucket: str, stage_bucket: str) -> None:
        """Judge requests to `bucket` as the policy judges `stage_bucket` (a second copy of the stage in a test)."""
        self.aliases[bucket] = stage_bucket

    def _note(self, operation: str, code: str) -> None:
        with self._lock:
            self.refused.append((operation, code))

    # before-parameter-build: keep the caller's parameters for the later stages (the request is serialized next)
    def keep_params(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context[_PARAMS] = dict(params)

    def before_call(self, model: Any, params: dict[str, Any], request_signer: Any, context: dict[str, Any], **_):
        """Answer a request that real AWS would refuse, or note what to check once moto has answered."""
        service = model.service_model.service_id.hyphenize()
        rule = getattr(self, f"_{service}_{model.name}", None)
        return None if rule is None else rule(params, context, request_signer)

    def after_call(self, http_response: AWSResponse, parsed: dict[str, Any], model: Any, context: dict, **_):
        """Apply the rules that depend on moto's answer."""
        service = model.service_model.service_id.hyphenize()
        rule = getattr(self, f"_after_{service}_{model.name}", None)
        if rule is not None:
            rule(http_response, parsed, context)

    # ---- S3 ----
    def _s3_key_length(self, operation: str, context: dict[str, Any]):
        key = context.get(_PARAMS, {}).get("Key", "")
        if len(key.encode()) <= MAX_KEY_BYTES:
            return None
        self._note(operation, "KeyTooLongError")
        return _error(400, "KeyTooLongError", "Your key is too long")

    def _s3_PutObject(self, params, context, signer):
        return self._s3_key_length("PutObject", context)

    def _s3_CopyObject(self, params, context, signer):
        return self._s3_key_length("CopyObject", context)

    def _s3_CreateMultipartUpload(self, params, context, signer):
        return self._s3_key_length("CreateMultipartUpload", context)

    def _missing_key(self, http: AWSResponse, parsed: dict[str, Any], context: dict, head: bool) -> None:
        code = parsed.get("Error", {}).get("Code")
        if http.status_code != 404 or code not in MISSING_KEY_CODES:
            return
        bucket = context.get(_PARAMS, {}).get("Bucket", "")
        if self.policy.missing_key_answers_404(self.aliases.get(bucket, bucket)):
            return
        self._note("HeadObject" if head else "GetObject", "AccessDenied")
        if head:
            _turn_into_error(http, parsed, 403, "403", "Forbidden")
        else:
            _turn_into_error(http, parsed, 403, "AccessDenied", "Access Denied")

    def _after_s3_GetObject(self, http, parsed, context):
        self._missing_key(http, parsed, context, head=False)

    def _after_s3_HeadObject(self, http, parsed, context):
        self._missing_key(http, parsed, context, head=True)

    # ---- SQS ----
    def _sqs_SendMessage(self, params, context, signer):
        body = json.loads(params["body"])
        refusal = sqs_refusal(body)
        if refusal is None:
            return None
        code, message = refusal
        self._note("SendMessage", code)
        return _error(400, "InvalidParameterValue" if code == "BatchEntryTooLong" else code, message)

    def _sqs_SendMessageBatch(self, params, context, signer):
        body = json.loads(params["body"])
        entries = body.get("Entries", [])
        failed, good = [], []
        for entry in entries:
            refusal = sqs_refusal(entry)
            if refusal is None:
                good.append(entry)
            else:
                self._note("SendMessageBatch", refusal[0])
                failed.append({"Id": entry["Id"], "SenderFault": True, "Code": refusal[0], "Message": refusal[1]})
        if sum(sqs_entry_bytes(e) for e in good) > MAX_SQS_BYTES:
            self._note("SendMessageBatch", "BatchRequestTooLong")
            message = f"Batch requests cannot be longer than {MAX_SQS_BYTES} bytes."
            return _error(400, "AWS.SimpleQueueService.BatchRequestTooLong", message)
        if not failed:
            return None
        if not good:
            return _response(200, {"Successful": [], "Failed": failed})
        params["body"] = json.dumps({**body, "Entries": good}).encode()
        context[_FAILED] = failed
        return None

    def _after_sqs_SendMessageBatch(self, http, parsed, context):
        failed = context.pop(_FAILED, None)
        if failed and http.status_code < 300:
            parsed["Failed"] = list(parsed.get("Failed", [])) + failed

    # ---- DynamoDB ----
    def _too_large(self, operation: str, message: str = "Item size has exceeded the maximum allowed size"):
        self._note(operation, "ValidationException")
        return _error(400, "ValidationException", message)

    def _dynamodb_PutItem(self, params, context, signer):
        item = json.loads(params["body"])["Item"]
        return self._too_large("PutItem") if item_bytes(item) > MAX_ITEM_BYTES else None

    def _dynamodb_BatchWriteItem(self, params, context, signer):
        requests = [r for rs in json.loads(params["body"])["RequestItems"].values() for r in rs]
        if len(requests) > MAX_BATCH_WRITE:
            self._note("BatchWriteItem", "ValidationException")
            message = (
                "1 validation error detected: Value at 'requestItems' failed to satisfy constraint: "
                f"Map value must satisfy constraint: [Member must have length less than or equal to {MAX_BATCH_WRITE}]"
            )
            return _error(400, "ValidationException", message)
        items = [r["PutRequest"]["Item"] for r in requests if "PutRequest" in r]
        return self._too_large("BatchWriteItem") if any(item_bytes(i) > MAX_ITEM_BYTES for i in items) else None

    def _dynamodb_UpdateItem(self, params, context, signer):
        # The size of the item as updated is known only once the update is applied: keep the item as it was,
        # let moto apply it, then check and put the old item back if DynamoDB would have refused.
        from moto.core.exceptions import JsonRESTError

        body = json.loads(params["body"])
        backend = _dynamodb_backend(signer.region_name)
        try:
            old = backend.get_item(body["TableName"], body["Key"])
        except JsonRESTError:  # no such table, or a malformed key: moto answers the request itself
            return None
        context[_BEFORE] = (backend, body, None if old is None else copy.deepcopy(old.to_json()["Attributes"]))
        return None

    def _after_dynamodb_UpdateItem(self, http, parsed, context):
        if _BEFORE not in context or http.status_code >= 300:
            return
        backend, body, old = context.pop(_BEFORE)
        new = backend.get_item(body["TableName"], body["Key"])
        if new is None or item_bytes(new.to_json()["Attributes"]) <= MAX_ITEM_BYTES:
            return
        if old is None:
            backend.delete_item(body["TableName"], body["Key"])
        else:
            backend.put_item(body["TableName"], old, overwrite=True)
        self._note("UpdateItem", "ValidationException")
        _turn_into_error(
            http, parsed, 400, "ValidationException", "Item size to update has exceeded the maximum allowed size"
        )


def _dynamodb_backend(region: str) -> Any:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends

    return dynamodb_backends[DEFAULT_ACCOUNT_ID][region]


# One set of handlers for the whole process, registered like moto's own stubber so every session created later
# has them; they act only while a layer is active.
_ACTIVE: list[StrictAws] = []


def _dispatch(method: str):
    def handler(**kwargs: Any) -> Any:
        if not _ACTIVE:
            return None
        return getattr(_ACTIVE[-1], method)(**kwargs)

    return handler


BUILTIN_HANDLERS.extend(
    [
        ("before-parameter-build", _dispatch("keep_params")),
        ("before-call", _dispatch("before_call")),
        ("after-call", _dispatch("after_call")),
    ]
)


# moto's DynamoDB calls that check a condition and then write the item.
_ITEM_WRITES = ("put_item", "update_item", "delete_item", "transact_write_items")
_WRITE_LOCK = threading.RLock()


def _one_at_a_time(method: Any) -> Any:
    def write(*args: Any, **kwargs: Any) -> Any:
        with _WRITE_LOCK:
            return method(*args, **kwargs)

    return write


@contextmanager
def _atomic_item_writes() -> Iterator[None]:
    """Make moto's condition check and write of an item one step, as DynamoDB's are, for the block."""
    from moto.dynamodb.models import DynamoDBBackend

    originals = {name: getattr(DynamoDBBackend, name) for name in _ITEM_WRITES}
    for name, method in originals.items():
        setattr(DynamoDBBackend, name, _one_at_a_time(method))
    try:
        yield
    finally:
        for name, method in originals.items():
            setattr(DynamoDBBackend, name, method)


@contextmanager
def strict_aws(policy: IamPolicy) -> Iterator[StrictAws]:
    """Apply the strict-AWS rules to every botocore client created inside the block (use inside mock_aws)."""
    layer = StrictAws(policy)
    _ACTIVE.append(layer)
    try:
        with _atomic_item_writes():
            yield layer
    finally:
        _ACTIVE.remove(layer)
