"""What each role and resource policy of the deployed template lets happen, asked as IAM would
decide it (tests/template/iam_eval.py) on the template as deployed - every function resolved
for a fixed account, region and stack (template_tools.render) - in each rendering every gate
judges: the defaults, and every optional feature on. Restructuring a policy cannot fool these:
only what it allows or denies counts."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest

from idle_stopper import decide as idle_decide
from template.iam_eval import ALLOW, DENY, Request, decide, decide_all, decide_with_resource_policy
from template_tools import (
    ACCOUNT,
    REGION,
    STACK_NAME,
    automation_folders,
    camel,
    cloudformation_template,
    render,
    rendered_ref,
    rendered_role_statements,
    renderings,
)

pytestmark = pytest.mark.unit

OTHER_ACCOUNT = "210987654321"
RENDERINGS = ("defaults", "features-on")
EXCLUSION_TAGS = (
    *idle_decide.AUTO_SCALING_TAGS,
    *idle_decide.KUBERNETES_TAGS,
    *idle_decide.OTHER_MANAGED_TAGS,
)


@cache
def rendering(name: str) -> dict[str, Any]:
    """A rendering every gate judges, or "outside-vpc": every other optional feature on, but no
    subnets for the health check."""
    template = cloudformation_template()
    if name == "outside-vpc":
        values = {**renderings(template)["features-on"], "WebsiteHealthCheckSubnetIds": []}
        return render(template, values)
    return render(template, renderings(template)[name])


@pytest.fixture(params=RENDERINGS)
def deployed(request: pytest.FixtureRequest) -> dict[str, Any]:
    return rendering(request.param)


def role(deployed: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return rendered_role_statements(deployed, f"{camel(name)}FunctionRole")


def ec2(kind: str, ident: str, account: str = ACCOUNT) -> str:
    return f"arn:aws:ec2:{REGION}:{account}:{kind}/{ident}"


INSTANCE = ec2("instance", "i-0123456789abcdef0")
ON_DEMAND_EBS = {"ec2:RootDeviceType": "ebs", "ec2:InstanceMarketType": "on-demand"}


# -- idle_stopper ---------------------------------------------------------------------------------


def stop(deployed: dict[str, Any], tags: dict[str, str], **context: str) -> str:
    facts = {**ON_DEMAND_EBS, **context, **{f"ec2:ResourceTag/{k}": v for k, v in tags.items()}}
    return decide(role(deployed, "idle_stopper"), Request("ec2:StopInstances", INSTANCE, facts))


def tag(deployed: dict[str, Any], keys: list[str], tags: dict[str, str] | None = None) -> str:
    facts: dict[str, Any] = {f"ec2:ResourceTag/{k}": v for k, v in (tags or {}).items()}
    if keys:
        facts["aws:TagKeys"] = keys
    return decide(role(deployed, "idle_stopper"), Request("ec2:CreateTags", INSTANCE, facts))


def test_idle_stopper_stops_an_on_demand_ebs_instance_and_writes_the_stopped_tags(
    deployed: dict[str, Any],
) -> None:
    assert stop(deployed, {"Name": "web"}) == ALLOW
    assert tag(deployed, ["StoppedBy"]) == ALLOW
    assert tag(deployed, ["StoppedBy", "StoppedReason", "StoppedAt"]) == ALLOW


def test_idle_stopper_writes_no_other_tag_and_no_empty_tag_set(deployed: dict[str, Any]) -> None:
    assert tag(deployed, ["AutoStop"]) != ALLOW  # e.g. AutoStop=true: it would opt an instance in
    assert tag(deployed, ["StoppedBy", "AutoStop"]) != ALLOW
    assert tag(deployed, []) != ALLOW  # no aws:TagKeys at all: ForAllValues alone would allow it
    on_volume = Request("ec2:CreateTags", ec2("volume", "vol-1"), {"aws:TagKeys": ["StoppedBy"]})
    assert decide(role(deployed, "idle_stopper"), on_volume) != ALLOW


def test_idle_stopper_marks_and_unmarks_only_the_planned_stop_tag(deployed: dict[str, Any]) -> None:
    """Warn, then act: AutoStopPlanned written and taken off again; DeleteTags of any other key
    (an opt-out, another automation's tag, the Owner) is refused, as is an empty key set."""
    statements = role(deployed, "idle_stopper")
    assert tag(deployed, ["AutoStopPlanned"]) == ALLOW

    def untag(keys: list[str]) -> str:
        facts: dict[str, Any] = {"aws:TagKeys": keys} if keys else {}
        return decide(statements, Request("ec2:DeleteTags", INSTANCE, facts))

    assert untag(["AutoStopPlanned"]) == ALLOW
    for keys in (["AutoStop"], ["Owner"], ["AutoStopPlanned", "StopAfter"], ["Backup"], []):
        assert untag(keys) != ALLOW, keys


ROUTES_MAIL = ("idle_stopper", "snapshot_rotator", "patch_sweeper")  # the OwnerMailPolicy's roles


@pytest.mark.parametrize("name", ROUTES_MAIL)
def test_owner_mail_goes_only_from_the_stacks_sender_and_reads_only_its_routing_map(name: str) -> None:
    """features-on: MailSenderAddress set - SES SendEmail from that address only; defaults:
    none at all. The routing map: the stack's own parameter, no other."""
    on, off = rendering("features-on"), rendering("defaults")
    sender = renderings(cloudformation_template())["features-on"]["MailSenderAddress"]
    identity = f"arn:aws:ses:{REGION}:{ACCOUNT}:identity/example.com"
    send = Request("ses:SendEmail", identity, {"ses:FromAddress": sender})
    assert decide(role(on, name), send) == ALLOW
    forged = Request("ses:SendEmail", identity, {"ses:FromAddress": "ceo@example.com"})
    assert decide(role(on, name), forged) != ALLOW
    assert decide(role(off, name), send) != ALLOW
    mine = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/{STACK_NAME}/mail-routing"
    assert decide(role(on, name), Request("ssm:GetParameter", mine)) == ALLOW
    other = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/{STACK_NAME}/website-health-check/sites"
    assert decide(role(on, name), Request("ssm:GetParameter", other)) != ALLOW


def test_only_the_automations_that_route_findings_may_mail_owners() -> None:
    on = rendering("features-on")
    sender = renderings(cloudformation_template())["features-on"]["MailSenderAddress"]
    send = Request(
        "ses:SendEmail", f"arn:aws:ses:{REGION}:{ACCOUNT}:identity/x.com", {"ses:FromAddress": sender}
    )
    for name in ("website_health_check", "owner_tagger", "owner_backfill", "instance_recovery"):
        assert decide(role(on, name), send) != ALLOW, name


@pytest.mark.parametrize("value", ["false", "never", "NO", "Off", "False"])
def test_idle_stopper_never_stops_or_tags_an_opted_out_instance(deployed: dict[str, Any], value: str) -> None:
    assert stop(deployed, {"AutoStop": value}) == DENY
    assert tag(deployed, ["StoppedBy"], {"AutoStop": value}) == DENY


@pytest.mark.parametrize("key", EXCLUSION_TAGS)
def test_idle_stopper_never_stops_or_tags_an_instance_with_an_exclusion_tag(
    deployed: dict[str, Any], key: str
) -> None:
    """Every exact tag key of idle_stopper.decide (Auto Scaling, EKS, Karpenter, other managed
    services) is an IAM Deny; even an empty value counts (the tag is there)."""
    for value in ("my-group", ""):
        assert stop(deployed, {key: value}) == DENY, key
        assert tag(deployed, ["StoppedBy"], {key: value}) == DENY, key


def test_idle_stopper_never_stops_spot_or_instance_store_or_another_accounts_instance(
    deployed: dict[str, Any],
) -> None:
    assert stop(deployed, {}, **{"ec2:InstanceMarketType": "spot"}) == DENY
    assert stop(deployed, {}, **{"ec2:RootDeviceType": "instance-store"}) != ALLOW
    elsewhere = Request("ec2:StopInstances", ec2("instance", "i-1", OTHER_ACCOUNT), ON_DEMAND_EBS)
    assert decide(role(deployed, "idle_stopper"), elsewhere) != ALLOW
    assert decide(role(deployed, "idle_stopper"), Request("ec2:TerminateInstances", INSTANCE)) != ALLOW


# -- instance_recovery ----------------------------------------------------------------------------


def alarm(name: str, account: str = ACCOUNT) -> str:
    return f"arn:aws:cloudwatch:{REGION}:{account}:alarm:{name}"


def test_instance_recovery_puts_and_deletes_only_this_stacks_recovery_alarms(
    deployed: dict[str, Any],
) -> None:
    mine = f"{STACK_NAME}-recover-i-0123456789abcdef0"
    statements = role(deployed, "instance_recovery")
    for action in ("cloudwatch:PutMetricAlarm", "cloudwatch:DeleteAlarms"):
        assert decide(statements, Request(action, alarm(mine))) == ALLOW, action
        for other in (
            "billing-alarm",
            "other-stack-recover-i-0123456789abcdef0",
            f"{STACK_NAME}-SiteDown",  # the stack's own alarms are CloudFormation's
        ):
            assert decide(statements, Request(action, alarm(other))) != ALLOW, (action, other)
        assert decide(statements, Request(action, alarm(mine, OTHER_ACCOUNT))) != ALLOW
    for action in ("cloudwatch:DisableAlarmActions", "cloudwatch:SetAlarmState", "ec2:RecoverInstances"):
        assert decide(statements, Request(action, alarm(mine))) != ALLOW, action


def test_instance_recovery_may_create_cloudwatchs_ec2_action_role_and_no_other(
    deployed: dict[str, Any],
) -> None:
    statements = role(deployed, "instance_recovery")
    events = (
        f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/events.amazonaws.com/AWSServiceRoleForCloudWatchEvents"
    )
    allowed = Request("iam:CreateServiceLinkedRole", events, {"iam:AWSServiceName": "events.amazonaws.com"})
    assert decide(statements, allowed) == ALLOW
    other = f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/ssm.amazonaws.com/AWSServiceRoleForAmazonSSM"
    assert (
        decide(
            statements,
            Request("iam:CreateServiceLinkedRole", other, {"iam:AWSServiceName": "ssm.amazonaws.com"}),
        )
        != ALLOW
    )
    assert (
        decide(
            statements,
            Request("iam:CreateServiceLinkedRole", events, {"iam:AWSServiceName": "ssm.amazonaws.com"}),
        )
        != ALLOW
    )
    assert decide(statements, Request("iam:CreateRole", f"arn:aws:iam::{ACCOUNT}:role/x")) != ALLOW


# -- patch_sweeper --------------------------------------------------------------------------------

RUN_PATCH_BASELINE = f"arn:aws:ssm:{REGION}::document/AWS-RunPatchBaseline"


def send_command(deployed: dict[str, Any], document: str, instance_tags: dict[str, str]) -> str:
    tags = {f"ssm:resourceTag/{k}": v for k, v in instance_tags.items()}
    return decide_all(role(deployed, "patch_sweeper"), "ssm:SendCommand", {document: {}, INSTANCE: tags})


def test_patch_sweeper_sends_run_patch_baseline_to_an_instance(deployed: dict[str, Any]) -> None:
    assert send_command(deployed, RUN_PATCH_BASELINE, {"Name": "db"}) == ALLOW


@pytest.mark.parametrize("value", ["false", "FALSE", "False", "no", "Never", "off"])
def test_patch_sweeper_never_patches_an_opted_out_instance(deployed: dict[str, Any], value: str) -> None:
    assert send_command(deployed, RUN_PATCH_BASELINE, {"AutoPatch": value}) == DENY


@pytest.mark.parametrize(
    "document",
    [
        f"arn:aws:ssm:{REGION}::document/AWS-RunShellScript",
        f"arn:aws:ssm:{REGION}:{ACCOUNT}:document/AWS-RunPatchBaseline",
        f"arn:aws:ssm:{REGION}:{ACCOUNT}:document/MyScript",
        "arn:aws:ssm:us-east-1::document/AWS-RunPatchBaseline",
    ],
)
def test_patch_sweeper_sends_no_other_document(deployed: dict[str, Any], document: str) -> None:
    assert send_command(deployed, document, {}) != ALLOW


def test_patch_sweeper_reads_patch_states_of_this_accounts_instances_only(deployed: dict[str, Any]) -> None:
    statements = role(deployed, "patch_sweeper")
    assert decide(statements, Request("ssm:DescribeInstancePatchStates", INSTANCE)) == ALLOW
    other = ec2("instance", "i-1", OTHER_ACCOUNT)
    assert decide(statements, Request("ssm:DescribeInstancePatchStates", other)) != ALLOW
    assert decide(statements, Request("ssm:ListCommands", "*")) == ALLOW


# -- every function: its logs, its failed events, nothing of Lambda's it does not need ------------


def function_log_group(deployed: dict[str, Any], name: str) -> str:
    group = deployed["Resources"][f"{camel(name)}LogGroup"]["Properties"]["LogGroupName"]
    # the group Lambda writes the function's logs to
    assert group == "/aws/lambda/" + rendered_ref(deployed, f"{camel(name)}Function"), group
    return str(group)


def stream(group: str) -> str:
    return (
        f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{group}:log-stream:2026/01/01/[$LATEST]0123456789abcdef"
    )


@pytest.mark.parametrize("name", automation_folders())
def test_each_function_writes_logs_only_to_its_own_log_group(deployed: dict[str, Any], name: str) -> None:
    statements = role(deployed, name)
    own = function_log_group(deployed, name)
    for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
        assert decide(statements, Request(action, stream(own))) == ALLOW, action
        for other in automation_folders():
            if other != name:
                assert (
                    decide(statements, Request(action, stream(function_log_group(deployed, other)))) != ALLOW
                )
        assert decide(statements, Request(action, stream("/aws/lambda/someone-else"))) != ALLOW
    group_arn = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{own}"
    assert decide(statements, Request("logs:CreateLogGroup", group_arn)) != ALLOW


ENI_ACTIONS = (
    "ec2:CreateNetworkInterface",
    "ec2:DeleteNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
)


@pytest.mark.parametrize("name", automation_folders())
@pytest.mark.parametrize("without_subnets", ["defaults", "outside-vpc"])
def test_no_function_has_network_interface_rights_outside_a_vpc(name: str, without_subnets: str) -> None:
    deployed = rendering(without_subnets)  # WebsiteHealthCheckSubnetIds empty, whatever else is on
    statements = role(deployed, name)
    assert not [a for s in statements for a in _actions(s) if "NetworkInterface" in a], name
    for action in ENI_ACTIONS:
        for resource in (ec2("network-interface", "eni-1"), ec2("subnet", "subnet-1"), "*"):
            assert decide(statements, Request(action, resource)) != ALLOW, (name, action)


def test_in_a_vpc_the_health_check_makes_interfaces_only_in_its_subnets_with_its_groups() -> None:
    """The given subnet and group IDs, in this account and region: another ID is refused, and so
    is the same ID shared from another account (VPC sharing) or named in another region."""
    deployed = rendering("features-on")
    values = renderings(cloudformation_template())["features-on"]
    subnet, group = values["WebsiteHealthCheckSubnetIds"][0], values["WebsiteHealthCheckSecurityGroupIds"][0]
    statements = role(deployed, "website_health_check")

    def create(subnet: str, group: str, subnet_arn: str = "", group_arn: str = "") -> str:
        resources = {
            ec2("network-interface", "*"): {},
            subnet_arn or ec2("subnet", subnet): {"ec2:SubnetID": subnet},
            group_arn or ec2("security-group", group): {"ec2:SecurityGroupID": group},
        }
        return decide_all(statements, "ec2:CreateNetworkInterface", resources)

    assert create(subnet, group) == ALLOW
    assert create("subnet-0ther", group) != ALLOW
    assert create(subnet, "sg-0ther") != ALLOW
    ours_subnet, ours_group = ec2("subnet", subnet), ec2("security-group", group)
    assert create(subnet, group, subnet_arn=ec2("subnet", subnet, OTHER_ACCOUNT)) != ALLOW
    assert create(subnet, group, group_arn=ec2("security-group", group, OTHER_ACCOUNT)) != ALLOW
    assert create(subnet, group, subnet_arn=ours_subnet.replace(REGION, "us-east-1")) != ALLOW
    assert create(subnet, group, group_arn=ours_group.replace(REGION, "us-east-1")) != ALLOW
    for action in (
        "ec2:DeleteNetworkInterface",
        "ec2:AssignPrivateIpAddresses",
        "ec2:DescribeNetworkInterfaces",
    ):
        assert decide(statements, Request(action, ec2("network-interface", "eni-1"))) == ALLOW, action
        assert decide(
            statements, Request(action, ec2("network-interface", "eni-1", OTHER_ACCOUNT))
        ) != ALLOW or (
            action == "ec2:DescribeNetworkInterfaces"  # Describe* has no resource-level permission
        )
    for name in automation_folders():
        if name != "website_health_check":
            assert not [a for s in role(deployed, name) for a in _actions(s) if "NetworkInterface" in a], name


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement.get("Action", [])
    return action if isinstance(action, list) else [action]


def queue_arn(deployed: dict[str, Any]) -> str:
    name = deployed["Resources"]["FailedEventsQueue"]["Properties"]["QueueName"]
    return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"


def topic_arn(deployed: dict[str, Any]) -> str:
    return f"arn:aws:sns:{REGION}:{ACCOUNT}:{deployed['Resources']['AlarmTopic']['Properties']['TopicName']}"


def policy(deployed: dict[str, Any], resource: str, key: str = "PolicyDocument") -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = deployed["Resources"][resource]["Properties"][key]["Statement"]
    return statements


@pytest.mark.parametrize("name", automation_folders())
def test_each_functions_role_can_deliver_its_failed_events_and_mail(
    deployed: dict[str, Any], name: str
) -> None:
    """Lambda's on-failure destination sends with the function's role (SAM added that grant to
    its own roles; ours must hold it), over TLS; and every run mails the topic."""
    me = {"AWS": f"arn:aws:iam::{ACCOUNT}:role/{name}"}
    statements = role(deployed, name)
    send = Request("sqs:SendMessage", queue_arn(deployed), {"aws:SecureTransport": True}, me)
    assert decide_with_resource_policy(policy(deployed, "FailedEventsQueuePolicy"), statements, send) == ALLOW
    elsewhere = Request("sqs:SendMessage", f"arn:aws:sqs:{REGION}:{ACCOUNT}:other", {})
    assert decide(statements, elsewhere) != ALLOW
    publish = Request("sns:Publish", topic_arn(deployed), {"aws:SecureTransport": True}, me)
    assert decide_with_resource_policy(policy(deployed, "AlarmTopicPolicy"), statements, publish) == ALLOW


# -- the failed-events queue and the topic --------------------------------------------------------


def stack_rules(deployed: dict[str, Any]) -> list[str]:
    return [
        f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{name}"
        for name in (
            _rule_name(logical, resource)
            for logical, resource in deployed["Resources"].items()
            if resource["Type"] == "AWS::Events::Rule"
        )
    ]


def _rule_name(logical: str, resource: dict[str, Any]) -> str:
    from template_tools import STACK_NAME

    return str(resource["Properties"].get("Name") or f"{STACK_NAME}-{logical}-ABCDEF012345")


def test_only_the_stacks_rules_may_dead_letter_to_the_queue_and_only_over_tls(
    deployed: dict[str, Any],
) -> None:
    statements = policy(deployed, "FailedEventsQueuePolicy")
    events = {"Service": "events.amazonaws.com"}
    rules = stack_rules(deployed)
    assert len(rules) >= len(automation_folders())
    for rule in rules:
        context = {"aws:SourceAccount": ACCOUNT, "aws:SourceArn": rule, "aws:SecureTransport": True}
        assert (
            decide(statements, Request("sqs:SendMessage", queue_arn(deployed), context, events)) == ALLOW
        ), rule
    for context in (
        {
            "aws:SourceAccount": ACCOUNT,
            "aws:SourceArn": f"arn:aws:events:{REGION}:{ACCOUNT}:rule/someone-else",
        },
        {"aws:SourceAccount": OTHER_ACCOUNT, "aws:SourceArn": rules[0].replace(ACCOUNT, OTHER_ACCOUNT)},
        {"aws:SourceAccount": ACCOUNT},
    ):
        assert decide(statements, Request("sqs:SendMessage", queue_arn(deployed), context, events)) != ALLOW
    plain = {"aws:SourceAccount": ACCOUNT, "aws:SourceArn": rules[0], "aws:SecureTransport": False}
    assert decide(statements, Request("sqs:SendMessage", queue_arn(deployed), plain, events)) == DENY
    anyone = {"AWS": f"arn:aws:iam::{ACCOUNT}:role/any"}
    receive = Request("sqs:ReceiveMessage", queue_arn(deployed), {"aws:SecureTransport": False}, anyone)
    assert decide(statements, receive) == DENY


def test_cloudwatch_alarms_of_this_account_may_publish_to_the_topic(deployed: dict[str, Any]) -> None:
    statements = policy(deployed, "AlarmTopicPolicy")
    cloudwatch = {"Service": "cloudwatch.amazonaws.com"}
    ok = {"aws:SourceAccount": ACCOUNT, "aws:SecureTransport": True}
    assert decide(statements, Request("sns:Publish", topic_arn(deployed), ok, cloudwatch)) == ALLOW
    other = {"aws:SourceAccount": OTHER_ACCOUNT, "aws:SecureTransport": True}
    assert decide(statements, Request("sns:Publish", topic_arn(deployed), other, cloudwatch)) != ALLOW


# -- the notification key -------------------------------------------------------------------------


def key_decision(
    deployed: dict[str, Any], action: str, principal: dict[str, str], context: dict[str, Any]
) -> str:
    key = deployed["Resources"]["NotificationKey"]["Properties"]["KeyPolicy"]["Statement"]
    arn = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
    identity: list[dict[str, Any]] = []
    if principal.get("AWS", "").startswith(f"arn:aws:iam::{ACCOUNT}:role/"):
        identity = role(deployed, principal["AWS"].rsplit("/", 1)[1])
    return decide_with_resource_policy(key, identity, Request(action, arn, context, principal), kms=True)


TOPIC_CONTEXT = "kms:EncryptionContext:aws:sns:topicArn"
QUEUE_CONTEXT = "kms:EncryptionContext:aws:sqs:arn"


@pytest.mark.parametrize("action", ["kms:GenerateDataKey", "kms:Decrypt"])
def test_cloudwatch_of_this_account_may_encrypt_for_the_topic(deployed: dict[str, Any], action: str) -> None:
    """The alarms' mails: CloudWatch publishes to the encrypted topic (else every alarm is lost)."""
    cloudwatch = {"Service": "cloudwatch.amazonaws.com"}
    ours = {"aws:SourceAccount": ACCOUNT, TOPIC_CONTEXT: topic_arn(deployed)}
    assert key_decision(deployed, action, cloudwatch, ours) == ALLOW
    assert key_decision(deployed, action, cloudwatch, {**ours, "aws:SourceAccount": OTHER_ACCOUNT}) != ALLOW
    other_topic = {**ours, TOPIC_CONTEXT: f"arn:aws:sns:{REGION}:{ACCOUNT}:someone-elses"}
    assert key_decision(deployed, action, cloudwatch, other_topic) != ALLOW


@pytest.mark.parametrize("action", ["kms:GenerateDataKey", "kms:Decrypt"])
def test_eventbridge_of_this_account_may_encrypt_for_the_queue(deployed: dict[str, Any], action: str) -> None:
    events = {"Service": "events.amazonaws.com"}
    ours = {"aws:SourceAccount": ACCOUNT, QUEUE_CONTEXT: queue_arn(deployed)}
    assert key_decision(deployed, action, events, ours) == ALLOW
    other_queue = {**ours, QUEUE_CONTEXT: f"arn:aws:sqs:{REGION}:{ACCOUNT}:someone-elses"}
    assert key_decision(deployed, action, events, other_queue) != ALLOW


@pytest.mark.parametrize("name", automation_folders())
def test_principals_of_this_account_use_the_key_only_through_sns_for_the_topic_and_sqs_for_the_queue(
    deployed: dict[str, Any], name: str
) -> None:
    me = {"AWS": f"arn:aws:iam::{ACCOUNT}:role/{name}"}
    via_sns = {"kms:CallerAccount": ACCOUNT, "kms:ViaService": f"sns.{REGION}.amazonaws.com"}
    via_sqs = {"kms:CallerAccount": ACCOUNT, "kms:ViaService": f"sqs.{REGION}.amazonaws.com"}
    for action in ("kms:GenerateDataKey", "kms:Decrypt"):
        assert key_decision(deployed, action, me, {**via_sns, TOPIC_CONTEXT: topic_arn(deployed)}) == ALLOW
        assert key_decision(deployed, action, me, {**via_sqs, QUEUE_CONTEXT: queue_arn(deployed)}) == ALLOW
        other_topic = {**via_sns, TOPIC_CONTEXT: f"arn:aws:sns:{REGION}:{ACCOUNT}:mine"}
        assert key_decision(deployed, action, me, other_topic) != ALLOW
        other_queue = {**via_sqs, QUEUE_CONTEXT: f"arn:aws:sqs:{REGION}:{ACCOUNT}:mine"}
        assert key_decision(deployed, action, me, other_queue) != ALLOW
        direct = {"kms:CallerAccount": ACCOUNT, TOPIC_CONTEXT: topic_arn(deployed)}
        assert key_decision(deployed, action, me, direct) != ALLOW  # not through SNS
    stranger = {"AWS": f"arn:aws:iam::{OTHER_ACCOUNT}:role/x"}
    across = {"kms:CallerAccount": OTHER_ACCOUNT, "kms:ViaService": f"sns.{REGION}.amazonaws.com"}
    assert (
        key_decision(deployed, "kms:Decrypt", stranger, {**across, TOPIC_CONTEXT: topic_arn(deployed)})
        != ALLOW
    )
