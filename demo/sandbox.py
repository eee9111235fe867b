"""A local sandbox account: a moto server on 127.0.0.1 with the stack's shared resources.

The real handlers run in this process with AWS_ENDPOINT_URL pointing at the moto server, so
every boto3 client they create talks to the sandbox; fake credentials make sure nothing could
sign a request for a real account. Mails are captured by an SQS queue subscribed to the
stack's topic, exactly as an e-mail subscription would receive them.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import textwrap
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import requests

from autopilot import aws

ROOT = Path(__file__).resolve().parent.parent


def sample_event(path: str) -> dict[str, Any]:
    """events/<path>.json as delivered now: its ``time`` (and a CloudTrail event's
    ``eventTime``) the clock's, since the runner refuses events far from its clock."""
    event: dict[str, Any] = json.loads((ROOT / "events" / f"{path.removesuffix('.json')}.json").read_text())
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    event["time"] = now
    if isinstance(event.get("detail"), dict) and "eventTime" in event["detail"]:
        event["detail"]["eventTime"] = now
    return event


REGION = "eu-west-1"
STACK = "ops-autopilot-demo"


@dataclass
class Mail:
    subject: str
    body: str
    attributes: dict[str, str]


class LambdaContext:
    function_name = "demo"
    memory_limit_in_mb = 256
    invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:demo"
    aws_request_id = "demo-request"

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


class Sandbox:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        # Every scenario starts from an empty account (moto server's reset API).
        requests.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()
        self.function_output: list[str] = []
        self.region = REGION
        self.stack_name = STACK
        sns = self.client("sns")
        self.topic_arn = sns.create_topic(Name=f"{STACK}-AlarmTopic")["TopicArn"]
        sqs = self.client("sqs")
        self._mail_queue = sqs.create_queue(QueueName=f"{STACK}-mail-capture")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=self._mail_queue, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        sns.subscribe(TopicArn=self.topic_arn, Protocol="sqs", Endpoint=queue_arn)
        # The stack's outbox table (template.yaml OutboxTable): claims and run records.
        self.outbox_table = f"{STACK}-OutboxTable"
        self.create_outbox(self.region)

    def create_outbox(self, region: str) -> None:
        """The stack's outbox table in ``region`` (another region's stack of the same template)."""
        boto3.client("dynamodb", region_name=region, endpoint_url=self.endpoint).create_table(
            TableName=self.outbox_table,
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name=self.region, endpoint_url=self.endpoint)

    def base_env(self, dry_run: bool = False, owner_tag_key: str = "Owner") -> dict[str, str]:
        """The environment template Globals give every function."""
        return {
            "STACK_NAME": self.stack_name,
            "TOPIC_ARN": self.topic_arn,
            "DRY_RUN": str(dry_run).lower(),
            "OWNER_TAG_KEY": owner_tag_key,
            "OUTBOX_TABLE": self.outbox_table,
        }

    @contextmanager
    def environment(self, variables: dict[str, str]) -> Iterator[None]:
        saved = {k: os.environ.get(k) for k in variables}
        os.environ.update(variables)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def invoke(self, automation: str, event: str | dict[str, Any], env: dict[str, str]) -> Any:
        """Run functions/<automation>/app.py:lambda_handler on an event from events/ (a path
        relative to events/, without .json) or a dict, with the function's environment.

        An event read from events/ gets a fresh id, as every scheduled occurrence or API call
        has its own in EventBridge (the runner treats one id as one delivery), and the time of
        now (the runner refuses events far from its clock); a dict is used as given (to show a
        duplicate delivery, pass the same dict twice)."""
        if isinstance(event, str):
            event = sample_event(event)
            event["id"] = str(uuid.uuid4())
        output = io.StringIO()  # the function's log lines and EMF metrics, kept out of the story
        with (
            self.environment({"POWERTOOLS_SERVICE_NAME": automation, **env}),
            contextlib.redirect_stdout(output),
        ):
            aws.reset_clients()
            module = importlib.import_module(f"{automation}.app")
            module = importlib.reload(module)  # re-read configuration from this environment
            result = module.lambda_handler(event, LambdaContext())
        self.function_output.append(output.getvalue())
        return result

    def mails(self) -> list[Mail]:
        """Mails published to the topic since the last call."""
        sqs = self.client("sqs")
        found: list[Mail] = []
        while batch := sqs.receive_message(QueueUrl=self._mail_queue, MaxNumberOfMessages=10).get("Messages"):
            for message in batch:
                envelope = json.loads(message["Body"])
                attributes = {k: v["Value"] for k, v in envelope.get("MessageAttributes", {}).items()}
                found.append(Mail(envelope.get("Subject", ""), envelope["Message"], attributes))
                sqs.delete_message(QueueUrl=self._mail_queue, ReceiptHandle=message["ReceiptHandle"])
        return found

    def print_mails(self) -> list[Mail]:
        mails = self.mails()
        if not mails:
            print("  (no mail sent)")
        for mail in mails:
            attrs = ", ".join(f"{k}={v}" for k, v in sorted(mail.attributes.items()))
            print(f"  +-- mail ({attrs})")
            print(f"  | Subject: {mail.subject}")
            print("  |")
            for line in mail.body.splitlines():
                print(textwrap.indent(line, "  | ") if line else "  |")
            print("  +--")
        return mails


def heading(text: str) -> None:
    print()
    print("=" * 78)
    print(text)
    print("=" * 78)


def step(text: str) -> None:
    print(f"\n>> {text}")
