"""Run Amazon States Language definitions in tests, without Docker: in-process over real handlers, or on moto.

`StateMachineRunner` interprets a definition (infra/statemachines/*.asl.json, its `${handler}` placeholders filled
in by `load_definition`) and calls a Python callable for each Task's function; `ChaliceLambdas` makes those
callables the app's own handlers through `chalice.test.Client`, with Lambda's answers: a result goes through JSON,
an unhandled exception becomes the error named after its class, as Step Functions reports it. Supported: Task
(`arn:aws:states:::lambda:invoke` and plain function ARNs), Pass, Choice, Wait (no real wait), Succeed, Fail,
Parallel and Map (inline and DISTRIBUTED; ItemsPath, ItemReader from S3 JSON or CSV objects and listObjectsV2,
ItemSelector, ItemBatcher, MaxConcurrency, ToleratedFailurePercentage/Count), with InputPath, Parameters (`.$`
JSONPath and the intrinsic functions), ResultSelector, ResultPath, OutputPath, Retry and Catch. A Map's children
run in an order shuffled from a seed, on threads if asked. A `Kill` makes one chosen invocation die once, at its
Nth AWS call or just before it returns, so a test can prove the retry or a re-run gives the same result.

`run_on_moto` executes a definition on moto's Step Functions (which runs Distributed Maps with S3 item readers
over Pass states, but cannot invoke Lambda without Docker) with every Task swapped for a Pass state whose result
is given, and returns the execution's status, output and history.

Anything else in a definition raises UnsupportedError rather than being silently ignored.
"""

from __future__ import annotations

import base64
import copy
import csv
import hashlib
import io
import json
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.client
import botocore.exceptions
import botocore.session

LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"
S3_GET_OBJECT = "arn:aws:states:::s3:getObject"
S3_LIST_OBJECTS = "arn:aws:states:::s3:listObjectsV2"
# Step Functions' limit on a state's input or output, and on a Map item (UTF-8 bytes).
PAYLOAD_LIMIT_BYTES = 256 * 1024
# Errors States.ALL does not catch (and no Retry retries).
TERMINAL_ERRORS = frozenset({"States.DataLimitExceeded", "States.Runtime"})
# The Lambda service's own errors, as a lambda:invoke Task reports them: a test function raises
# StatesError(name, cause) with one of them to stand for a throttle or an outage.
LAMBDA_SERVICE_ERRORS = (
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
)
# What Lambda reports for an invocation whose process died (killed, out of memory) or that ran out of time.
KILLED_ERROR = "Runtime.ExitError"
TIMED_OUT_ERROR = "Sandbox.Timedout"
PLACEHOLDER = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
ACCOUNT, REGION = "123456789012", "us-east-1"


class StatesError(Exception):
    """A Step Functions error: its name (what Retry and Catch match) and its cause."""

    def __init__(self, error: str, cause: str = "") -> None:
        super().__init__(f"{error}: {cause}")
        self.error, self.cause = error, cause


class UnsupportedError(NotImplementedError):
    """A definition uses something this harness does not interpret."""


class Killed(BaseException):
    """The invocation's process died: raised inside the handler, caught by nothing but the runner.

    A BaseException, as a death is not an error the code under test may catch and carry on from.
    """


# ---- definitions -------------------------------------------------------------------------------------------
def render(text: str, values: Mapping[str, str]) -> dict[str, Any]:
    """Fill in a definition's `${name}` placeholders as Terraform's templatefile() does; fail on a missing one."""
    missing = set(PLACEHOLDER.findall(text)) - set(values)
    if missing:
        raise KeyError(f"no value for placeholder(s) {sorted(missing)}")
    return json.loads(PLACEHOLDER.sub(lambda m: values[m.group(1)], text))


def load_definition(path: Path, bucket: str) -> dict[str, Any]:
    """Read an ASL file with each function placeholder standing for its handler's name and `${bucket}` the bucket."""
    text = path.read_text()
    values = {name: name for name in PLACEHOLDER.findall(text)}
    return render(text, {**values, "bucket": bucket})


def function_name(value: str) -> str:
    """Return the handler a FunctionName or function ARN names ("churnguard-dev-x", an ARN or "x" itself: "x")."""
    name = value.split(":function:")[-1].split(":")[0]
    return name


# ---- JSONPath and intrinsic functions -------------------------------------------------------------------------
PATH_PART = re.compile(r"\.([A-Za-z0-9_$@-]+)|\[(\d+)\]|\['([^']*)'\]")


def path_parts(path: str) -> tuple[str, list[str | int]]:
    """Split a JSONPath ($ or $$ rooted, dots, [index], ['key']) into its root and steps."""
    root = "$$" if path.startswith("$$") else "$"
    if not path.startswith("$"):
        raise StatesError("States.Runtime", f"not a JSONPath: {path!r}")
    rest, steps = path[len(root) :], []
    while rest:
        match = PATH_PART.match(rest)
        if not match:
            raise UnsupportedError(f"JSONPath {path!r}: only $.a.b, [n] and ['k'] are interpreted")
        name, index, quoted = match.groups()
        steps.append(int(index) if index is not None else (name if name is not None else quoted))
        rest = rest[match.end() :]
    return root, steps


def select(path: str, data: Any, context: Mapping[str, Any]) -> Any:
    """Return what a JSONPath selects; a path to nothing is States.Runtime, as in Step Functions."""
    root, steps = path_parts(path)
    node = context if root == "$$" else data
    for step in steps:
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError) as exc:
            raise StatesError("States.Runtime", f"the JSONPath {path!r} selects nothing") from exc
    return node


def present(path: str, data: Any) -> bool:
    try:
        select(path, data, {})
    except StatesError:
        return False
    return True


def place(data: Any, path: str | None, result: Any) -> Any:
    """Return `data` with `result` at ResultPath `path` ($: replaces it; None: discards the result)."""
    if path is None:
        return data
    _, steps = path_parts(path)
    if not steps:
        return result
    if not isinstance(data, dict):
        raise StatesError("States.Runtime", f"ResultPath {path!r} on an input that is not an object")
    out = copy.deepcopy(data)
    node = out
    for step in steps[:-1]:
        if not isinstance(node.get(step), dict):
            node[step] = {}
        node = node[step]
    node[steps[-1]] = result
    return out


def _split_arguments(text: str) -> list[str]:
    """Split an intrinsic's argument list at its top-level commas."""
    parts, depth, quoted, current = [], 0, False, []
    for i, char in enumerate(text):
        escaped = i > 0 and text[i - 1] == "\\"
        if char == "'" and not escaped:
            quoted = not quoted
        elif not quoted and char in "(":
            depth += 1
        elif not quoted and char in ")":
            depth -= 1
        if char == "," and not quoted and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    if "".join(current).strip():
        parts.append("".join(current).strip())
    return parts


def _argument(text: str, data: Any, context: Mapping[str, Any], rng: random.Random) -> Any:
    if text.startswith("'"):
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    if text.startswith("$"):
        return select(text, data, context)
    if text.startswith("States."):
        return intrinsic(text, data, context, rng)
    if text in ("true", "false", "null"):
        return json.loads(text)
    return json.loads(text)  # a number


def _format(template: str, *values: Any) -> str:
    pieces = template.split("{}")
    if len(pieces) - 1 != len(values):
        raise StatesError("States.IntrinsicFailure", f"States.Format: {len(values)} values for {template!r}")
    text = pieces[0]
    for value, piece in zip(values, pieces[1:]):
        text += (value if isinstance(value, str) else json.dumps(value)) + piece
    return text


def _partition(values: list[Any], size: int) -> list[list[Any]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


def _hash(value: str, algorithm: str) -> str:
    return hashlib.new(algorithm.replace("-", "").lower(), value.encode()).hexdigest()


INTRINSICS: dict[str, Callable[..., Any]] = {
    "States.Format": _format,
    "States.StringToJson": json.loads,
    "States.JsonToString": lambda value: json.dumps(value, separators=(",", ":")),
    "States.Array": lambda *values: list(values),
    "States.ArrayPartition": _partition,
    "States.ArrayContains": lambda values, value: value in values,
    "States.ArrayRange": lambda start, end, step: list(range(int(start), int(end) + 1, int(step))),
    "States.ArrayGetItem": lambda values, index: values[int(index)],
    "States.ArrayLength": len,
    "States.ArrayUnique": lambda values: [v for i, v in enumerate(values) if v not in values[:i]],
    "States.Base64Encode": lambda text: base64.b64encode(text.encode()).decode(),
    "States.Base64Decode": lambda text: base64.b64decode(text).decode(),
    "States.Hash": _hash,
    "States.JsonMerge": lambda a, b, deep: {**a, **b},
    "States.MathAdd": lambda a, b: a + b,
    "States.StringSplit": lambda text, separators: [p for p in re.split(f"[{re.escape(separators)}]", text) if p],
}


def intrinsic(text: str, data: Any, context: Mapping[str, Any], rng: random.Random) -> Any:
    """Evaluate an intrinsic function call such as States.Format('{}-{}', $.a, $$.Map.Item.Index)."""
    match = re.fullmatch(r"(States\.[A-Za-z]+)\((.*)\)", text.strip(), re.S)
    if not match:
        raise StatesError("States.Runtime", f"not an intrinsic function: {text!r}")
    name, arguments = match.groups()
    values = [_argument(a, data, context, rng) for a in _split_arguments(arguments)]
    if name == "States.UUID":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    if name == "States.MathRandom":
        return rng.randint(int(values[0]), int(values[1]) - 1)
    if name not in INTRINSICS:
        raise UnsupportedError(f"intrinsic function {name}")
    try:
        return INTRINSICS[name](*values)
    except (TypeError, ValueError, IndexError, KeyError) as exc:
        raise StatesError("States.IntrinsicFailure", f"{name}: {exc}") from exc


def evaluate(template: Any, data: Any, context: Mapping[str, Any], rng: random.Random) -> Any:
    """Return a Parameters / ResultSelector / ItemSelector template with its `.$` fields evaluated."""
    if isinstance(template, list):
        return [evaluate(item, data, context, rng) for item in template]
    if not isinstance(template, dict):
        return template
    out = {}
    for key, value in template.items():
        if key.endswith(".$"):
            is_path = value.startswith("$")
            out[key[:-2]] = select(value, data, context) if is_path else intrinsic(value, data, context, rng)
        else:
            out[key] = evaluate(value, data, context, rng)
    return out


def check_size(value: Any, where: str) -> None:
    """Raise States.DataLimitExceeded when a state's data is past Step Functions' 256 KiB."""
    size = len(json.dumps(value, separators=(",", ":")).encode())
    if size > PAYLOAD_LIMIT_BYTES:
        raise StatesError("States.DataLimitExceeded", f"{where}: {size} bytes > {PAYLOAD_LIMIT_BYTES}")


# ---- Choice rules -----------------------------------------------------------------------------------------
COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "Equals": lambda a, b: a == b,
    "LessThan": lambda a, b: a < b,
    "GreaterThan": lambda a, b: a > b,
    "LessThanEquals": lambda a, b: a <= b,
    "GreaterThanEquals": lambda a, b: a >= b,
}
KINDS = {"String": (str,), "Numeric": (int, float), "Boolean": (bool,), "Timestamp": (str,)}
TESTS: dict[str, Callable[[Any], bool]] = {
    "IsNull": lambda v: v is None,
    "IsString": lambda v: isinstance(v, str),
    "IsNumeric": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "IsBoolean": lambda v: isinstance(v, bool),
    "IsTimestamp": lambda v: isinstance(v, str) and bool(re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+(Z|[+-][\d:]+)", v)),
}


def _compare(operator: str, value: Any, wanted: Any) -> bool:
    if operator == "StringMatches":
        pattern = re.escape(wanted).replace(r"\*", ".*")
        return isinstance(value, str) and re.fullmatch(pattern, value) is not None
    match = re.fullmatch(
        r"(String|Numeric|Boolean|Timestamp)(Equals|LessThan|GreaterThan|LessThanEquals|GreaterThanEquals)", operator
    )
    if not match:
        raise UnsupportedError(f"Choice operator {operator}")
    kind, comparison = match.groups()
    if not isinstance(value, KINDS[kind]) or (kind == "Numeric" and isinstance(value, bool)):
        return False
    return COMPARISONS[comparison](value, wanted)


def rule_holds(rule: dict[str, Any], data: Any, context: Mapping[str, Any]) -> bool:
    """Return whether a Choice rule (with And / Or / Not) holds for `data`."""
    if "And" in rule:
        return all(rule_holds(r, data, context) for r in rule["And"])
    if "Or" in rule:
        return any(rule_holds(r, data, context) for r in rule["Or"])
    if "Not" in rule:
        return not rule_holds(rule["Not"], data, context)
    variable = rule["Variable"]
    (operator,) = [k for k in rule if k not in ("Variable", "Next")]
    if operator == "IsPresent":
        return present(variable, data) == rule[operator]
    if not present(variable, data):
        return False
    value = select(variable, data, context)
    if operator in TESTS:
        return TESTS[operator](value) == rule[operator]
    wanted = rule[operator]
    if operator.endswith("Path"):
        operator, wanted = operator[: -len("Path")], select(wanted, data, context)
    return _compare(operator, value, wanted)


# ---- Retry and Catch ------------------------------------------------------------------------------------------
def matches(names: list[str], error: str) -> bool:
    """Return whether ErrorEquals `names` match `error` (States.ALL: anything but the terminal errors)."""
    if error in names:
        return True
    if "States.ALL" in names:
        return error not in TERMINAL_ERRORS
    return "States.TaskFailed" in names and error not in TERMINAL_ERRORS and error != "States.Timeout"


def retry_delay(retrier: dict[str, Any], attempt: int) -> float:
    """Return the seconds Step Functions would wait before retry number `attempt` (1-based), before jitter."""
    delay = retrier.get("IntervalSeconds", 1) * retrier.get("BackoffRate", 2.0) ** (attempt - 1)
    return min(delay, retrier.get("MaxDelaySeconds", delay))


# ---- kills ------------------------------------------------------------------------------------------------
@dataclass
class Kill:
    """Make one invocation of `function` die once: the `invocation`-th (1-based) of that function, or the one
    whose Map item index is `item`; at its `at_call`-th AWS call (before the call is made), or just before it
    returns when `at_call` is None. Lambda then reports `error` (the process exited) to Step Functions. A kill
    whose call never comes (the invocation made fewer calls) stays armed: `fired` says whether it happened."""

    function: str
    invocation: int | None = 1
    item: int | None = None
    at_call: int | None = None
    error: str = KILLED_ERROR
    fired: bool = False
    calls_before_death: int = 0

    def aims_at(self, function: str, invocation: int, item: int | None) -> bool:
        if self.fired or function != self.function:
            return False
        return item == self.item if self.item is not None else invocation == self.invocation


@dataclass
class _Invocation:
    kill: Kill | None
    calls: int = 0
    dead: bool = False


# The repository's state machine definitions.
DEFINITIONS = Path(__file__).resolve().parent.parent / "infra" / "statemachines"
_CURRENT: list[_Invocation] = []
_PATCH_LOCK = threading.Lock()


@contextmanager
def _counting_aws_calls() -> Iterator[None]:
    """Count every botocore call made while an invocation runs; kill it at its chosen call."""
    original = botocore.client.BaseClient._make_api_call

    def counted(client: Any, operation: str, params: dict[str, Any]) -> Any:
        if _CURRENT:
            current = _CURRENT[-1]
            if current.dead:
                raise Killed(f"already dead before {operation}")
            current.calls += 1
            kill = current.kill
            if kill is not None and kill.at_call == current.calls:
                current.dead, kill.fired, kill.calls_before_death = True, True, current.calls - 1
                raise Killed(f"killed before AWS call {current.calls} ({operation})")
        return original(client, operation, params)

    with _PATCH_LOCK:
        botocore.client.BaseClient._make_api_call = counted
        try:
            yield
        finally:
            botocore.client.BaseClient._make_api_call = original


# ---- the runner ---------------------------------------------------------------------------------------------
@dataclass
class Invocation:
    """One call of a Task's function: what it was handed and how it ended."""

    function: str
    payload: Any
    item: int | None
    outcome: str  # "ok", or the error name
    calls: int = 0  # its AWS calls; exact only with threads=0 (on threads, concurrent invocations' calls mix)


@dataclass
class Execution:
    """How one run of a definition ended, with what happened on the way."""

    status: str  # SUCCEEDED | FAILED
    output: Any = None
    error: str | None = None
    cause: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    invocations: list[Invocation] = field(default_factory=list)
    waited_seconds: float = 0.0

    def calls_of(self, function: str) -> list[Invocation]:
        return [i for i in self.invocations if i.function == function]


@dataclass
class _Run:
    """What one execution shares across its states and Map children."""

    name: str
    rng: random.Random
    lock: threading.Lock = field(default_factory=threading.Lock)
    history: list[dict[str, Any]] = field(default_factory=list)
    invocations: list[Invocation] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    waited: float = 0.0

    def note(self, **event: Any) -> None:
        with self.lock:
            self.history.append(event)


class StateMachineRunner:
    """Interprets one ASL definition in-process, each Task's function a Python callable (see the module doc)."""

    def __init__(
        self,
        definition: dict[str, Any],
        functions: Mapping[str, Callable[[Any], Any]],
        *,
        s3: Any = None,
        seed: int = 0,
        threads: int = 0,
        kill: Kill | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        if threads and kill is not None and kill.at_call is not None:
            raise ValueError("a kill at an AWS call needs threads=0: calls from many threads cannot be told apart")
        self.definition, self.functions, self.s3 = definition, dict(functions), s3
        self.seed, self.threads, self.kill = seed, threads, kill
        # Called with the seconds of each Retry interval and Wait instead of sleeping them: a test may move its
        # clock on (a killed invocation's lease runs out while its retries wait).
        self.sleep = sleep

    def run(self, payload: Any = None, name: str = "execution") -> Execution:
        """Run the definition on `payload`; return how it ended (a failure is returned, not raised)."""
        run = _Run(name, random.Random(self.seed))
        context = self._context(name, payload)
        with _counting_aws_calls():
            try:
                output = self._machine(self.definition, {} if payload is None else payload, context, run, None)
            except StatesError as exc:
                run.note(type="ExecutionFailed", error=exc.error, cause=exc.cause)
                return Execution("FAILED", None, exc.error, exc.cause, run.history, run.invocations, run.waited)
        run.note(type="ExecutionSucceeded")
        return Execution("SUCCEEDED", output, None, None, run.history, run.invocations, run.waited)

    @staticmethod
    def _context(name: str, payload: Any) -> dict[str, Any]:
        machine = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:harness"
        return {
            "Execution": {
                "Id": f"arn:aws:states:{REGION}:{ACCOUNT}:execution:harness:{name}",
                "Name": name,
                "Input": payload,
                "StartTime": "2026-01-01T00:00:00.000Z",
            },
            "StateMachine": {"Id": machine, "Name": "harness"},
            "State": {},
        }

    # -- states --
    def _machine(self, machine: dict[str, Any], data: Any, context: dict[str, Any], run: _Run, item: int | None):
        """Run a (sub-)state machine from its StartAt to a terminal state; return its output."""
        name = machine["StartAt"]
        while True:
            state = machine["States"][name]
            context = {**context, "State": {"Name": name, "EnteredTime": "2026-01-01T00:00:00.000Z", "RetryCount": 0}}
            run.note(type=f"{state['Type']}StateEntered", state=name, item=item)
            data, following = self._state(name, state, data, context, run, item)
            check_size(data, f"the output of {name}")
            run.note(type=f"{state['Type']}StateExited", state=name, item=item)
            if following is None:
                return data
            name = following

    def _state(self, name: str, state: dict[str, Any], data: Any, context: dict[str, Any], run: _Run, item):
        """Run one state with its Retry and Catch; return (output, the next state's name or None at the end)."""
        kind = state["Type"]
        if kind == "Choice":
            return self._choice(name, state, data, context)
        if kind == "Fail":
            raise self._failure(state, data, context)
        attempts: dict[int, int] = {}
        while True:
            try:
                return self._once(state, data, context, run, item), self._next(state)
            except StatesError as exc:
                retrier = self._retrier(state, exc.error, attempts)
                if retrier is None:
                    caught = self._catch(state, exc, data)
                    if caught is None:
                        raise
                    return caught
                self._wait(run, retry_delay(state["Retry"][retrier], attempts[retrier]))
                context = {**context, "State": {**context["State"], "RetryCount": sum(attempts.values())}}
                run.note(type="StateRetried", state=name, item=item, error=exc.error, attempt=attempts[retrier])

    def _wait(self, run: _Run, seconds: float) -> None:
        """Count a wait (and hand it to `sleep`, when given) instead of sleeping it."""
        with run.lock:
            run.waited += seconds
        if self.sleep is not None:
            self.sleep(seconds)

    @staticmethod
    def _next(state: dict[str, Any]) -> str | None:
        return None if state.get("End") or state["Type"] in ("Succeed", "Fail") else state["Next"]

    @staticmethod
    def _retrier(state: dict[str, Any], error: str, attempts: dict[int, int]) -> int | None:
        """Return the index of the Retry entry that retries `error` once more (counting it), or None."""
        if error in TERMINAL_ERRORS:
            return None
        for index, retrier in enumerate(state.get("Retry", [])):
            if matches(retrier["ErrorEquals"], error):
                if attempts.get(index, 0) >= retrier.get("MaxAttempts", 3):
                    return None
                attempts[index] = attempts.get(index, 0) + 1
                return index
        return None

    @staticmethod
    def _catch(state: dict[str, Any], exc: StatesError, data: Any) -> tuple[Any, str] | None:
        if exc.error in TERMINAL_ERRORS:
            return None
        for catcher in state.get("Catch", []):
            if matches(catcher["ErrorEquals"], exc.error):
                output = place(data, catcher.get("ResultPath", "$"), {"Error": exc.error, "Cause": exc.cause})
                return output, catcher["Next"]
        return None

    @staticmethod
    def _failure(state: dict[str, Any], data: Any, context: dict[str, Any]) -> StatesError:
        error = select(state["ErrorPath"], data, context) if "ErrorPath" in state else state.get("Error", "")
        cause = select(state["CausePath"], data, context) if "CausePath" in state else state.get("Cause", "")
        return StatesError(error, cause)

    @staticmethod
    def _choice(name: str, state: dict[str, Any], data: Any, context: dict[str, Any]) -> tuple[Any, str]:
        effective = select(state.get("InputPath", "$"), data, context) if state.get("InputPath", "$") else {}
        for rule in state["Choices"]:
            if rule_holds(rule, effective, context):
                return StateMachineRunner._output(state, effective, context), rule["Next"]
        if "Default" not in state:
            raise StatesError("States.NoChoiceMatched", f"no choice of {name} matched")
        return StateMachineRunner._output(state, effective, context), state["Default"]

    @staticmethod
    def _output(state: dict[str, Any], data: Any, context: dict[str, Any]) -> Any:
        path = state.get("OutputPath", "$")
        return {} if path is None else select(path, data, context)

    def _once(self, state: dict[str, Any], data: Any, context: dict[str, Any], run: _Run, item: int | None) -> Any:
        """Run one attempt of a state: InputPath, Parameters, the work, ResultSelector, ResultPath, OutputPath."""
        kind = state["Type"]
        path = state.get("InputPath", "$")
        effective = {} if path is None else select(path, data, context)
        if kind in ("Succeed", "Wait"):
            if kind == "Wait":
                self._wait(run, state.get("Seconds", 0))
            return self._output(state, effective, context)
        template = state.get("Parameters") if kind != "Map" else None
        handed = evaluate(template, effective, context, run.rng) if template is not None else effective
        check_size(handed, "a state's effective input")
        result = self._work(state, handed, context, run, item)
        if "ResultSelector" in state:
            result = evaluate(state["ResultSelector"], result, context, run.rng)
        placed = place(data, state.get("ResultPath", "$"), result)
        return self._output(state, placed, context)

    def _work(self, state: dict[str, Any], handed: Any, context: dict[str, Any], run: _Run, item: int | None) -> Any:
        kind = state["Type"]
        if kind == "Pass":
            return state.get("Result", handed)
        if kind == "Task":
            return self._task(state, handed, run, item)
        if kind == "Map":
            return self._map(state, handed, context, run)
        if kind == "Parallel":
            return [self._machine(branch, handed, context, run, item) for branch in state["Branches"]]
        raise UnsupportedError(f"state type {kind}")

    # -- Task --
    def _task(self, state: dict[str, Any], handed: Any, run: _Run, item: int | None) -> Any:
        """Invoke the Task's function; return what the integration returns (lambda:invoke wraps the payload)."""
        resource = state["Resource"]
        if resource == LAMBDA_INVOKE:
            target, payload = function_name(handed["FunctionName"]), handed.get("Payload", {})
        elif ":lambda:" in resource and ":function:" in resource:
            target, payload = function_name(resource), handed
        else:
            raise UnsupportedError(f"Task resource {resource}")
        target = self._resolve(target)
        result = self._invoke(target, payload, run, item)
        if resource != LAMBDA_INVOKE:
            return result
        return {"ExecutedVersion": "$LATEST", "Payload": result, "StatusCode": 200}

    def _resolve(self, target: str) -> str:
        """Return the handler a function name stands for: itself, or the one a deployed name ends in (app-stage-x)."""
        if target in self.functions:
            return target
        candidates = [name for name in self.functions if target.endswith(f"-{name}")]
        if len(candidates) != 1:
            raise StatesError("Lambda.ResourceNotFoundException", f"Function not found: {target}")
        return candidates[0]

    def _invoke(self, target: str, payload: Any, run: _Run, item: int | None) -> Any:
        with run.lock:
            run.counts[target] = number = run.counts.get(target, 0) + 1
        kill = self.kill if self.kill is not None and self.kill.aims_at(target, number, item) else None
        if kill is not None:
            kill.fired = kill.at_call is None  # an AWS-call kill fires when its call comes
        current = _Invocation(kill)
        record = Invocation(target, copy.deepcopy(payload), item, "ok")
        _CURRENT.append(current)
        try:
            result = self.functions[target](copy.deepcopy(payload))
            if kill is not None and kill.at_call is None:
                raise Killed("killed just before returning")
        except Killed as exc:
            error = kill.error if kill is not None else KILLED_ERROR
            record.outcome = error
            raise StatesError(error, json.dumps({"errorType": error, "errorMessage": str(exc)})) from None
        except StatesError as exc:
            record.outcome = exc.error
            raise
        finally:
            _CURRENT.remove(current)
            record.calls = current.calls
            with run.lock:
                run.invocations.append(record)
        return result

    # -- Map --
    def _map(self, state: dict[str, Any], handed: Any, context: dict[str, Any], run: _Run) -> list[Any]:
        """Run a Map state's children over its items; return their outputs in item order."""
        for unsupported in ("ResultWriter",):
            if unsupported in state:
                raise UnsupportedError(f"Map {unsupported}")
        items = self._items(state, handed, context)
        processor = state.get("ItemProcessor") or state.get("Iterator")
        distributed = processor.get("ProcessorConfig", {}).get("Mode") == "DISTRIBUTED"
        selector = state.get("ItemSelector") or state.get("Parameters")
        inputs = [self._item_input(selector, handed, context, value, index, run) for index, value in enumerate(items)]
        order = list(range(len(inputs)))
        run.rng.shuffle(order)
        run.note(type="MapRunStarted", items=len(inputs), order=order, distributed=distributed)
        outcomes = self._children(processor, inputs, order, context, run, state.get("MaxConcurrency", 0))
        failures = [o for o in outcomes if isinstance(o, StatesError)]
        run.note(type="MapRunEnded", items=len(inputs), failed=len(failures))
        if failures and (not distributed or not self._tolerated(state, len(failures), len(inputs))):
            if distributed:
                raise StatesError("States.ExceedToleratedFailureThreshold", f"{len(failures)} of {len(inputs)} failed")
            raise failures[0]
        return [None if isinstance(o, StatesError) else o for o in outcomes]

    @staticmethod
    def _tolerated(state: dict[str, Any], failed: int, total: int) -> bool:
        percentage = state.get("ToleratedFailurePercentage", 0)
        count = state.get("ToleratedFailureCount", 0)
        return failed <= count or (total > 0 and 100.0 * failed / total <= percentage)

    def _items(self, state: dict[str, Any], handed: Any, context: dict[str, Any]) -> list[Any]:
        if "ItemReader" in state:
            items = self._read_items(state["ItemReader"], handed, context)
        else:
            items = select(state.get("ItemsPath", "$"), handed, context)
        if not isinstance(items, list):
            raise StatesError("States.Runtime", "a Map's items are not an array")
        batcher = state.get("ItemBatcher")
        if batcher:
            size = batcher.get("MaxItemsPerBatch", len(items) or 1)
            base = evaluate(batcher.get("BatchInput", {}), handed, context, random.Random(0))
            items = [{"BatchInput": base, "Items": items[i : i + size]} for i in range(0, len(items), size)]
        for value in items:
            check_size(value, "a Map item")
        return items

    def _read_items(self, reader: dict[str, Any], handed: Any, context: dict[str, Any]) -> list[Any]:
        """Read a Distributed Map's items from S3, as its ItemReader says."""
        if self.s3 is None:
            raise UnsupportedError("an ItemReader needs the runner's s3 client")
        parameters = evaluate(reader.get("Parameters", {}), handed, context, random.Random(0))
        config = reader.get("ReaderConfig", {})
        if reader["Resource"] == S3_LIST_OBJECTS:
            pages = self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=parameters["Bucket"], Prefix=parameters.get("Prefix", "")
            )
            items = [
                {"Key": o["Key"], "Size": o["Size"], "Etag": o["ETag"], "StorageClass": o.get("StorageClass", "")}
                for page in pages
                for o in page.get("Contents", [])
            ]
        elif reader["Resource"] == S3_GET_OBJECT:
            body = self._get_object(parameters)
            items = self._parse_items(body, config)
        else:
            raise UnsupportedError(f"ItemReader {reader['Resource']}")
        return items[: config["MaxItems"]] if "MaxItems" in config else items

    def _get_object(self, parameters: dict[str, Any]) -> str:
        try:
            response = self.s3.get_object(Bucket=parameters["Bucket"], Key=parameters["Key"])
        except botocore.exceptions.ClientError as exc:
            raise StatesError("States.ItemReaderFailed", str(exc)) from exc
        return response["Body"].read().decode()

    @staticmethod
    def _parse_items(body: str, config: dict[str, Any]) -> list[Any]:
        kind = config.get("InputType", "JSON")
        if kind == "JSON":
            try:
                return json.loads(body)
            except json.JSONDecodeError as exc:
                raise StatesError("States.ItemReaderFailed", f"not JSON: {exc}") from exc
        if kind == "CSV":
            rows = list(csv.reader(io.StringIO(body)))
            header = config.get("CSVHeaders") or rows.pop(0)
            return [dict(zip(header, row)) for row in rows]
        raise UnsupportedError(f"ItemReader InputType {kind}")

    @staticmethod
    def _item_input(selector, handed: Any, context: dict[str, Any], value: Any, index: int, run: _Run) -> Any:
        if selector is None:
            return value
        scoped = {**context, "Map": {"Item": {"Index": index, "Value": value}}}
        return evaluate(selector, handed, scoped, run.rng)

    def _children(self, processor, inputs: list[Any], order: list[int], context, run: _Run, limit: int) -> list[Any]:
        """Run each child (in `order`); return each one's output, or its StatesError, by item index."""
        outcomes: list[Any] = [None] * len(inputs)

        def child(index: int) -> None:
            scoped = {**context, "Map": {"Item": {"Index": index, "Value": inputs[index]}}}
            try:
                outcomes[index] = self._machine(processor, inputs[index], scoped, run, index)
            except StatesError as exc:
                outcomes[index] = exc

        if self.threads:
            workers = min(self.threads, limit or self.threads)
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(child, order))
        else:
            for index in order:
                child(index)
        return outcomes


# ---- the app's handlers as the Task functions ------------------------------------------------------------
class ChaliceLambdas(Mapping[str, Callable[[Any], Any]]):
    """The app's `@app.lambda_function` handlers, invoked as Lambda would through `chalice.test.Client`.

    Hand it the integration tests' `client` fixture: that one gives handlers the stage's timeout, where a bare
    client gives every handler a 3-second LambdaContext.

    The payload and the result go through JSON (a result JSON cannot hold is Runtime.MarshalError); an unhandled
    exception is the error named after its class, its cause the errorMessage / errorType JSON Lambda returns.
    """

    def __init__(self, client: Any, names: list[str] | None = None) -> None:
        self.client = client
        self.names = sorted(names if names is not None else client._app.handler_map)

    def __getitem__(self, name: str) -> Callable[[Any], Any]:
        if name not in self.names:
            raise KeyError(name)
        return lambda payload: self.invoke(name, payload)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def invoke(self, name: str, payload: Any) -> Any:
        """Invoke one handler; return its result as Lambda hands it back, or raise the StatesError it becomes."""
        event = json.loads(json.dumps(payload))
        try:
            response = self.client.lambda_.invoke(name, event)
        except Killed:
            raise
        except Exception as exc:  # Lambda reports any unhandled exception by its class name: so does this
            error = type(exc).__name__
            raise StatesError(error, json.dumps({"errorMessage": str(exc), "errorType": error})) from exc
        try:
            return json.loads(json.dumps(response.payload))
        except (TypeError, ValueError) as exc:
            raise StatesError("Runtime.MarshalError", f"Unable to marshal response: {exc}") from exc


def run_repository_definition(client: Any, machine: str, bucket: str, job: Any, name: str, **runner: Any) -> Execution:
    """Run infra/statemachines/<machine>.asl.json over the app's handlers (the integration `client`), in S3 on moto.

    The functions' clock moves on by every interval the retries and waits would take, so a killed invocation's
    lease runs out while its retries wait, as it does on AWS. `runner` goes to StateMachineRunner (seed, kill...).
    """
    from chalicelib import runtime

    waited = [0.0]
    runtime.get_pipeline().ctx.clock = lambda: time.time() + waited[0]
    definition = load_definition(DEFINITIONS / f"{machine}.asl.json", bucket)

    def sleep(seconds: float) -> None:
        waited[0] += seconds

    s3 = botocore.session.get_session().create_client("s3")
    return StateMachineRunner(definition, ChaliceLambdas(client), s3=s3, sleep=sleep, **runner).run(job, name=name)


# ---- moto's Step Functions ----------------------------------------------------------------------------------
@dataclass
class MotoExecution:
    """An execution on moto's Step Functions: its status, output and history event types."""

    status: str
    output: Any
    events: list[dict[str, Any]]
    definition: dict[str, Any]

    @property
    def event_types(self) -> list[str]:
        return [e["type"] for e in self.events]


def tasks_as_passes(definition: dict[str, Any], results: Mapping[str, Any]) -> dict[str, Any]:
    """Return `definition` with each Task a Pass state whose Result is what the Task would produce.

    `results` gives, by handler name, what its function returns (the Lambda payload); the Task's ResultSelector
    (over lambda:invoke's wrapper) is applied here, since a Pass state has none. Retry, Catch and timeouts go.
    """
    swapped = copy.deepcopy(definition)
    for machine in _machines(swapped):
        for name, state in machine["States"].items():
            if state["Type"] == "Task":
                machine["States"][name] = _as_pass(state, results)
            elif "ToleratedFailurePercentage" in state:
                # moto's ASL grammar reads this field only as a decimal number ("0" is refused, "0.0" is not)
                state["ToleratedFailurePercentage"] = float(state["ToleratedFailurePercentage"])
    return swapped


def _machines(machine: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield machine
    for state in machine["States"].values():
        processor = state.get("ItemProcessor") or state.get("Iterator")
        for inner in ([processor] if processor else []) + state.get("Branches", []):
            yield from _machines(inner)


def _as_pass(state: dict[str, Any], results: Mapping[str, Any]) -> dict[str, Any]:
    parameters = state.get("Parameters", {})
    target = function_name(parameters.get("FunctionName", state["Resource"]))
    if target not in results:
        raise KeyError(f"no result given for the Task of {target}")
    result = results[target]
    if state["Resource"] == LAMBDA_INVOKE:
        result = {"ExecutedVersion": "$LATEST", "Payload": result, "StatusCode": 200}
    if "ResultSelector" in state:
        result = evaluate(state["ResultSelector"], result, {}, random.Random(0))
    kept = {k: state[k] for k in ("Comment", "InputPath", "ResultPath", "OutputPath", "Next", "End") if k in state}
    return {"Type": "Pass", "Result": result, **kept}


def run_on_moto(
    sfn: Any,
    definition: dict[str, Any],
    results: Mapping[str, Any],
    payload: Any = None,
    name: str = "execution",
    timeout_seconds: float = 30.0,
) -> MotoExecution:
    """Run `definition` on moto's Step Functions with its Tasks swapped for Pass states; wait for it to end.

    Needs moto's executing parser: `mock_aws(config={"stepfunctions": {"execute_state_machine": True}})`
    (see `moto_executes_state_machines`), entered before `sfn` was created.
    """
    swapped = tasks_as_passes(definition, results)
    machine = sfn.create_state_machine(
        name=f"harness-{uuid.uuid4().hex[:8]}",
        definition=json.dumps(swapped),
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/harness",
        type="STANDARD",
    )["stateMachineArn"]
    execution = sfn.start_execution(stateMachineArn=machine, name=name, input=json.dumps(payload or {}))
    arn, deadline = execution["executionArn"], time.monotonic() + timeout_seconds
    while (described := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
        if time.monotonic() > deadline:
            raise TimeoutError(f"{arn} still running after {timeout_seconds} s")
        time.sleep(0.02)
    pages = sfn.get_paginator("get_execution_history").paginate(executionArn=arn)
    events = [event for page in pages for event in page["events"]]
    output = json.loads(described["output"]) if described.get("output") else None
    return MotoExecution(described["status"], output, events, swapped)


@contextmanager
def moto_executes_state_machines() -> Iterator[None]:
    """Inside an active mock_aws, have moto's Step Functions execute definitions (its ASL parser) for the block."""
    from moto import mock_aws

    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        yield
