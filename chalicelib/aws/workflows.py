"""Step Functions adapter: starts the executions that spread one run over many functions."""

from __future__ import annotations

import json
from typing import Any

import boto3
from botocore.exceptions import ClientError

from chalicelib.aws.boto import BOTO_CONFIG, error_code
from chalicelib.errors import ChurnGuardError
from chalicelib.runs.ports import Started


class NotDeployedError(ChurnGuardError):
    """A run asked for a state machine the stage does not deploy."""


class StateMachines:
    """Starts executions of the stage's state machines, one execution name per run."""

    def __init__(self, client: Any, arns: dict[str, str]) -> None:
        self.client = client
        self.arns = dict(arns)

    @classmethod
    def create(cls, arns: dict[str, str]) -> StateMachines:
        """Return an adapter with a default client (honours AWS_ENDPOINT_URL)."""
        return cls(boto3.client("stepfunctions", config=BOTO_CONFIG), arns)

    def available(self, machine: str) -> bool:
        """Return True when the state machine is deployed for this stage."""
        return machine in self.arns

    def start(self, machine: str, name: str, payload: dict[str, Any]) -> Started:
        """Start an execution named `name` unless one exists; return its ARN and whether the start was accepted.

        Step Functions answers a start under the name of a running execution with the same input by returning
        that execution (accepted), and under a closed one's name or with another input by ExecutionAlreadyExists
        (not new): either way the run is under way or done already.
        """
        if machine not in self.arns:
            raise NotDeployedError(f"the {machine} state machine is not deployed (its ARN setting is unset)")
        arn = self.arns[machine]
        try:
            response = self.client.start_execution(stateMachineArn=arn, name=name, input=json.dumps(payload))
        except ClientError as exc:
            if error_code(exc) != "ExecutionAlreadyExists":
                raise
            return Started(execution_arn(arn, name), new=False)
        return Started(response["executionArn"], new=True)


def execution_arn(state_machine_arn: str, name: str) -> str:
    """Return the ARN of the execution named `name` of a state machine."""
    return state_machine_arn.replace(":stateMachine:", ":execution:", 1) + ":" + name
