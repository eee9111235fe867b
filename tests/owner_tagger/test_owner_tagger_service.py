"""service.py: the EC2 calls - batching at the API maxima, per-resource failures, transient
errors left to the retry."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from autopilot import aws
from autopilot.recorder import CallRecorder
from owner_tagger import service

pytestmark = pytest.mark.integration


def test_create_tags_batches_at_the_api_maximum(owner_env: dict[str, str]) -> None:
    ids = [f"snap-{n:017x}" for n in range(2500)]
    with Stubber(aws.client("ec2")) as stub:
        for start, end in ((0, 1000), (1000, 2000), (2000, 2500)):
            expected = {"Resources": ids[start:end], "Tags": [{"Key": "Owner", "Value": "x"}]}
            stub.add_response("create_tags", {}, expected)
        assert service.create_tags(ids, "Owner", "x") == service.Written([], {})
        stub.assert_no_pending_responses()


def test_a_refused_batch_is_retried_one_by_one(owner_env: dict[str, str]) -> None:
    ids = ["i-0123456789abcdef0", "vol-0123456789abcdef0"]
    with Stubber(aws.client("ec2")) as stub:
        stub.add_client_error("create_tags", service_error_code="InvalidVolume.NotFound")
        stub.add_response("create_tags", {}, {"Resources": ids[:1], "Tags": [{"Key": "Owner", "Value": "x"}]})
        stub.add_client_error(
            "create_tags", service_error_code="InvalidVolume.NotFound", service_message="gone"
        )
        failures = service.create_tags(ids, "Owner", "x").failures
        stub.assert_no_pending_responses()
    assert [f.as_dict() for f in failures] == [
        {"id": ids[1], "code": "InvalidVolume.NotFound", "message": "gone"}
    ]


def _denied(stub: Stubber) -> None:
    stub.add_client_error("create_tags", service_error_code="UnauthorizedOperation", http_status_code=403)


def test_a_batch_iam_refuses_keeps_who_carries_the_key_and_writes_the_rest(owner_env: dict[str, str]) -> None:
    ids = ["i-0123456789abcdef0", "vol-0123456789abcdef0", "eni-0123456789abcdef0"]
    tag = [{"Key": "Owner", "Value": "x"}]
    with Stubber(aws.client("ec2")) as stub:
        _denied(stub)  # the volume was tagged by hand after the launch: the Deny refuses the batch
        stub.add_response(
            "describe_tags",
            {
                "Tags": [
                    {"ResourceId": ids[1], "ResourceType": "volume", "Key": "owner", "Value": "bob"},
                    {"ResourceId": ids[1], "ResourceType": "volume", "Key": "Owner", "Value": "bob@x"},
                    {"ResourceId": ids[2], "ResourceType": "network-interface", "Key": "Name", "Value": "a"},
                ]
            },
            {"Filters": [{"Name": "resource-id", "Values": ids}]},
        )
        stub.add_response("create_tags", {}, {"Resources": [ids[0], ids[2]], "Tags": tag})
        written = service.create_tags(ids, "Owner", "x")
        stub.assert_no_pending_responses()
    assert written == service.Written([], {ids[1]: "bob@x"})  # the exact key wins over "owner"


def test_a_refusal_nobody_explains_fails_the_batch_without_a_call_per_id(owner_env: dict[str, str]) -> None:
    ids = [f"vol-{n:017x}" for n in range(3)]
    with Stubber(aws.client("ec2")) as stub:
        _denied(stub)  # a missing permission (an SCP, say): nobody carries the key
        stub.add_response(
            "describe_tags", {"Tags": []}, {"Filters": [{"Name": "resource-id", "Values": ids}]}
        )
        written = service.create_tags(ids, "Owner", "x")
        stub.assert_no_pending_responses()
    assert [(f.resource_id, f.code) for f in written.failures] == [(i, "UnauthorizedOperation") for i in ids]
    assert written.kept == {}


def test_owners_set_while_writing_are_read_again_a_bounded_number_of_times(owner_env: dict[str, str]) -> None:
    ids = [f"vol-{n:017x}" for n in range(5)]
    with Stubber(aws.client("ec2")) as stub:
        for n in range(service.DENIED_ROUNDS):  # each read finds one more owner, set meanwhile
            _denied(stub)
            tags = [{"ResourceId": ids[n], "ResourceType": "volume", "Key": "Owner", "Value": f"p{n}"}]
            stub.add_response("describe_tags", {"Tags": tags})
        _denied(stub)
        written = service.create_tags(ids, "Owner", "x")
        stub.assert_no_pending_responses()
    assert written.kept == {ids[n]: f"p{n}" for n in range(service.DENIED_ROUNDS)}
    assert {f.resource_id for f in written.failures} == set(ids[service.DENIED_ROUNDS :])


def test_transient_errors_propagate_for_a_retry(owner_env: dict[str, str]) -> None:
    with Stubber(aws.client("ec2")) as stub:
        # The Stubber answers before the client's own retries: this is the error that is
        # left once they are exhausted. It must fail the invocation (so it is retried whole),
        # not be reported as a per-resource failure.
        stub.add_client_error("create_tags", service_error_code="RequestLimitExceeded", http_status_code=503)
        with pytest.raises(ClientError, match="RequestLimitExceeded"):
            service.create_tags(["i-0123456789abcdef0", "vol-0123456789abcdef0"], "Owner", "x")
        stub.assert_no_pending_responses()


def test_reads_batch_at_200_filter_values(owner_env: dict[str, str], calls: CallRecorder) -> None:
    ids = [f"vol-{n:017x}" for n in range(401)]
    assert service.owner_tags(ids, "Owner") == {}
    # ids that do not exist: InstanceIds refuses the call, the id filter reads them in 200s
    assert service.describe_instances([f"i-{n:017x}" for n in range(201)]) == {}
    assert calls.by_operation() == {"ec2.DescribeTags": 3, "ec2.DescribeInstances": 1 + 2}
    assert [len(p["Filters"][0]["Values"]) for p in calls.of("ec2", "DescribeTags")] == [200, 200, 1]
    assert all(
        p["Filters"][1] == {"Name": "key", "Values": ["Owner"]} for p in calls.of("ec2", "DescribeTags")
    )


def test_owner_tags_reads_only_the_key(owner_env: dict[str, str], ec2: Any, launch: Any) -> None:
    instance = launch(1)[0]["InstanceId"]
    ec2.create_tags(
        Resources=[instance], Tags=[{"Key": "Owner", "Value": "ann"}, {"Key": "Name", "Value": "w"}]
    )
    assert service.owner_tags([instance], "Owner") == {instance: "ann"}
    assert service.owner_tags([instance], "CreatedBy") == {}
    assert service.owner_tags([], "Owner") == {}


def test_describe_instances_views(owner_env: dict[str, str], launch: Any, helpers: Any, ec2: Any) -> None:
    instance = launch(1)[0]["InstanceId"]
    volumes, enis = helpers.attachments(ec2, instance)
    (view,) = service.describe_instances([instance, "i-0000000000000dead"]).values()
    assert (view.id, view.volume_ids, view.network_interface_ids) == (instance, tuple(volumes), tuple(enis))
    assert not view.gone and not view.volumes_pending


def test_a_thousand_instances_are_read_in_one_call(
    owner_env: dict[str, str], ec2: Any, calls: CallRecorder
) -> None:
    """DescribeInstances takes 1,000 InstanceIds: a 1,000-instance launch is one read (the
    API's minimum), and one id that does not exist costs the id-filter reads of its batch only."""
    made = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1000, MaxCount=1000)["Instances"]
    ids = [i["InstanceId"] for i in made]
    assert set(service.describe_instances(ids)) == set(ids)
    assert calls.count("ec2", "DescribeInstances") == 1
    assert calls.of("ec2", "DescribeInstances")[0]["InstanceIds"] == ids
    with CallRecorder() as again:
        views = service.describe_instances([*ids[:10], "i-0123456789abcdef0"])
    assert set(views) == set(ids[:10]) and again.count("ec2", "DescribeInstances") == 1 + 1
