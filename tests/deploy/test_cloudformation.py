"""deploy/: the CloudFormation templates lint clean (cfn-lint), pass checkov with every skip
justified, grant exactly the AWS calls the code makes on exactly our resources, and agree with
the worker's tables, settings, port, user and log events."""

from __future__ import annotations

import ast
import dataclasses
import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.session
import pytest
import yaml
from botocore import xform_name

from consumer.config import OPTIONS, Settings
from consumer.ops.provision import table_specs
from tests.deploy.conftest import ROOT, run, tool

DEPLOY = ROOT / "deploy"
TEMPLATES = sorted(DEPLOY.glob("*.yaml"))
OPTION_BY_ENV = {option.env: option for option in OPTIONS}

# What a worker runs: the consumer package and the kernel, without the operator's commands
# (consumer/ops: creating the stream and tables, listing and replaying dead letters, which
# are the operator's rights) and the fakes shipped for tests (consumer/testing).
RUNTIME = ("consumer", "kernel")
NOT_RUNTIME = ("consumer/ops", "consumer/testing")
# Which tables a module's DynamoDB calls go to.
TABLES_OF_MODULE = {
    "consumer/lease/repository.py": {"lease"},
    "consumer/lease/member_table.py": {"members"},
    "consumer/pipeline/table.py": {"records", "deadletter"},
    "consumer/worker.py": {"lease", "members", "deadletter"},  # preflight DescribeTable
    "consumer/adapters/fastpath.py": {"records", "deadletter"},  # the lean BatchWriteItem
    "consumer/pipeline/keys.py": {"records"},  # DescribeTable: the records table's key schema
    "consumer/pipeline/publish.py": {"alerts"},  # the alerts' ledger
    "consumer/pipeline/ledger.py": {"alerts"},  # its DescribeTable at start-up
    "consumer/sources/archive.py": {"alerts"},  # the queue messages' archive claims
    "consumer/insights/store.py": {"insights"},  # segments' commits and cells
    "consumer/insights/batch.py": {"insights"},  # the Lambda's: commits a retry starts in
    "consumer/sources/sqs.py": {"deadletter"},  # preflight DescribeTable
}
# Modules only some configurations run, by the template conditions (all of them) that grant
# their calls.
CONDITIONAL = {
    "consumer/pipeline/publish.py": ("HasAlerts",),
    "consumer/pipeline/alerting.py": ("HasAlerts",),  # the topic's check at start-up
    "consumer/pipeline/ledger.py": ("HasLedger",),
    "consumer/sources/archive.py": ("HasQueue", "HasArchive"),  # the queue messages' archive
    "consumer/pipeline/archiver.py": ("HasArchive",),
    "consumer/sources/sqs.py": ("HasQueue",),
    "consumer/insights/store.py": ("HasInsights",),
    "consumer/fanout/registration.py": ("HasFanOut",),
    "consumer/fanout/reader.py": ("HasFanOut",),
}
# Kinesis operations whose resource is the stream consumer, not the stream
ON_CONSUMER = {"DescribeStreamConsumer", "SubscribeToShard"}
# SQS operations -> the IAM action that allows them (the batch calls need the single one's)
SQS_ACTIONS = {
    "ReceiveMessage": "sqs:ReceiveMessage",
    "DeleteMessageBatch": "sqs:DeleteMessage",
    "ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
    "GetQueueAttributes": "sqs:GetQueueAttributes",
}
# S3 operations -> the IAM action that allows them, and on what (the bucket or its objects)
S3_ACTIONS = {
    "PutObject": ("s3:PutObject", "archiveobjects"),
    "ListObjectsV2": ("s3:ListBucket", "archive"),
    "HeadObject": ("s3:GetObject", "archiveobjects"),
    "GetObject": ("s3:GetObject", "archiveobjects"),
    "HeadBucket": ("s3:ListBucket", "archive"),
}
# The Lambda handler writes through the tables' sink (consumer/pipeline/table.py), and on a
# cold start reads the records table's key schema (consumer/pipeline/keys.py); with alerts or
# the archive on, it calls what they call (its archive is batch_archive's, which only the
# handler runs).
LAMBDA_MODULES = (
    "consumer/lambda_handler.py",
    "consumer/pipeline/table.py",
    "consumer/pipeline/keys.py",
)
LAMBDA_CONDITIONAL = {
    "consumer/pipeline/publish.py": "HasAlerts",
    "consumer/pipeline/alerting.py": "HasAlerts",
    "consumer/pipeline/ledger.py": "HasAlerts",
    "consumer/pipeline/archiver.py": "HasArchive",
    "consumer/pipeline/batch_archive.py": "HasArchive",
    "consumer/insights/store.py": "HasInsights",
    "consumer/insights/batch.py": "HasInsights",
}
LAMBDA_ONLY = ("consumer/pipeline/batch_archive.py", "consumer/insights/batch.py")
# What a Kinesis event source mapping calls with the function's role (Lambda documentation,
# "Lambda execution role permissions" for Kinesis, without enhanced fan-out).
EVENT_SOURCE_MAPPING = {
    "kinesis:DescribeStream",
    "kinesis:DescribeStreamSummary",
    "kinesis:ListShards",
    "kinesis:GetShardIterator",
    "kinesis:GetRecords",
}
# Resource references -> what they are.
LOGICAL = {"Stream": "stream", "LeaseTable": "lease", "RecordsTable": "records"}
LOGICAL |= {"AlertLedgerTable": "alerts", "AlertTopic": "alerttopic", "ArchiveBucket": "archive"}
LOGICAL |= {"Queue": "queue", "InsightsTable": "insights"}
LOGICAL |= {"MemberTable": "members"}
LOGICAL |= {"DeadLetterTable": "deadletter", "Key": "key"}
EXPORTS = {"StreamArn": "stream", "TableArn": "records", "DeadLetterTableArn": "deadletter"}
EXPORTS |= {"KeyArn": "key", "AlertTopicArn": "alerttopic", "AlertLedgerTableArn": "alerts"}
EXPORTS |= {"ArchiveBucketArn": "archive", "ArchiveObjectsArn": "archiveobjects"}
EXPORTS |= {"InsightsTableArn": "insights"}


# --- templates as data -------------------------------------------------------------------------


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags, as the long JSON forms."""


def _intrinsic(loader: CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {"Ref" if suffix == "Ref" else f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _intrinsic)


def load(name: str) -> dict[str, Any]:
    template: dict[str, Any] = yaml.load((DEPLOY / name).read_text(), Loader=CfnLoader)
    return template


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def target(ref: Any) -> str:
    """A Resource entry -> stream | lease | records | deadletter | key | the raw value."""
    if isinstance(ref, dict) and isinstance(ref.get("Ref"), str) and ref["Ref"] in LOGICAL:
        return LOGICAL[ref["Ref"]]  # a topic's Ref is its ARN
    if isinstance(ref, dict) and ref.get("Fn::Sub") == "${ArchiveBucket.Arn}/${ArchivePrefix}*":
        return "archiveobjects"
    if isinstance(ref, dict) and ref.get("Fn::Sub") == "${Stream.Arn}/consumer/*":
        return "consumer"
    if isinstance(ref, dict) and "Fn::GetAtt" in ref:
        return LOGICAL.get(ref["Fn::GetAtt"][0], str(ref))
    if isinstance(ref, dict) and "Fn::ImportValue" in ref:
        export = ref["Fn::ImportValue"]["Fn::Sub"].removeprefix("${BaseStack}-")
        return EXPORTS.get(export, str(ref))
    return json.dumps(ref)


def resolve(value: Any, conditions: dict[str, bool]) -> Any:
    """``Fn::If`` resolved for ``conditions`` (a condition not named is false); ``NoValue``
    entries of lists and mappings dropped."""
    if isinstance(value, dict):
        if "Fn::If" in value:
            name, then, otherwise = value["Fn::If"]
            return resolve(then if conditions.get(name, False) else otherwise, conditions)
        pairs = ((k, resolve(v, conditions)) for k, v in value.items())
        return {k: v for k, v in pairs if v != {"Ref": "AWS::NoValue"}}
    if isinstance(value, list):
        items = [resolve(v, conditions) for v in value]
        return [v for v in items if v != {"Ref": "AWS::NoValue"}]
    return value


def derived(template: dict[str, Any], given: dict[str, bool]) -> dict[str, bool]:
    """``given`` and the template's conditions built from them (``Fn::Or``, ``Fn::And``,
    ``Fn::Not``, ``Condition``); a condition neither given nor built is false."""

    def value(expression: Any) -> bool:
        if isinstance(expression, dict) and "Fn::Condition" in expression:
            return found(expression["Fn::Condition"])
        (kind, args), *_ = expression.items()
        if kind == "Fn::Or":
            return any(value(a) for a in args)
        if kind == "Fn::And":
            return all(value(a) for a in args)
        if kind == "Fn::Not":
            return not value(args[0])
        return False

    def found(name: str) -> bool:
        if name not in given:
            given[name] = value(template["Conditions"][name])
        return given[name]

    for name in template.get("Conditions", {}):
        found(name)
    return given


def statements(
    policy: dict[str, Any], conditions: dict[str, bool] | None = None
) -> Iterator[dict[str, Any]]:
    for statement in resolve(policy["Statement"], conditions or {}):
        actions = statement["Action"]
        resources_ = statement["Resource"]
        yield {
            **statement,
            "Action": [actions] if isinstance(actions, str) else actions,
            "Resource": resources_ if isinstance(resources_, list) else [resources_],
        }


def grants(
    policy: dict[str, Any], conditions: dict[str, bool] | None = None
) -> set[tuple[str, str]]:
    """(action, resource) pairs of a policy, KMS aside."""
    return {
        (action, target(resource))
        for statement in statements(policy, conditions)
        for action in statement["Action"]
        if not action.startswith("kms:")
        for resource in statement["Resource"]
    }


# --- the code's AWS calls ----------------------------------------------------------------------


@functools.cache  # botocore's service models load slowly: once per test session
def operations() -> dict[str, tuple[str, str]]:
    """botocore method name -> (service, API action), for Kinesis, DynamoDB and SNS."""
    session = botocore.session.get_session()
    found: dict[str, tuple[str, str]] = {}
    ambiguous: set[str] = set()
    for service in ("kinesis", "dynamodb", "sns", "s3", "sqs"):
        for op in session.get_service_model(service).operation_names:
            method = xform_name(op)
            if method in found:
                ambiguous.add(method)
            found[method] = (service, op)
    return {m: v for m, v in found.items() if m not in ambiguous}


@functools.cache
def calls_in(path: Path) -> frozenset[tuple[str, str]]:
    """The Kinesis and DynamoDB operations a module calls: botocore client methods
    (``.get_records(…)``, or ``.scan`` handed to ``scan_pages``), and the lean path's signed
    JSON calls (``.call("GetRecords", …)``)."""
    ops = operations()
    by_operation = {op: (service, op) for service, op in ops.values()}
    found: set[tuple[str, str]] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr in ops:
            # a call (``db.scan(…)``) or a bound method handed on (``scan_pages(db.scan, …)``)
            found.add(ops[node.attr])
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "call"
            and node.args
        ):
            first = node.args[0]
            if isinstance(first, ast.Constant) and first.value in by_operation:
                found.add(by_operation[first.value])
    return frozenset(found)


def expected_grants(modules: list[Path]) -> set[tuple[str, str]]:
    expected: set[tuple[str, str]] = set()
    for path in modules:
        module = str(path.relative_to(ROOT))
        for service, op in calls_in(path):
            if service == "kinesis":
                expected.add((f"kinesis:{op}", "consumer" if op in ON_CONSUMER else "stream"))
                continue
            if service == "sns":
                expected.add((f"sns:{op}", "alerttopic"))
                continue
            if service == "s3":
                expected.add(S3_ACTIONS[op])
                continue
            if service == "sqs":
                expected.add((SQS_ACTIONS[op], "queue"))
                continue
            assert module in TABLES_OF_MODULE, f"{module} calls DynamoDB {op}: map its tables"
            expected |= {(f"dynamodb:{op}", table) for table in TABLES_OF_MODULE[module]}
    return expected


def worker_modules(conditions: dict[str, bool] | None = None) -> list[Path]:
    """The modules a worker runs in a configuration (template conditions true or not)."""
    on = conditions or {}

    def runs(path: Path) -> bool:
        module = str(path.relative_to(ROOT))
        if not all(on.get(name, False) for name in CONDITIONAL.get(module, ())):
            return False
        return not module.startswith(NOT_RUNTIME) and module not in LAMBDA_ONLY

    return [p for top in RUNTIME for p in sorted((ROOT / top).rglob("*.py")) if runs(p)]


def test_the_call_finder_sees_the_calls() -> None:
    """The derivation below is not vacuous: it finds the calls we know are there."""
    found = calls_in(ROOT / "consumer/lease/repository.py")
    assert {("dynamodb", "UpdateItem"), ("dynamodb", "Scan"), ("dynamodb", "PutItem")} <= found
    assert ("kinesis", "GetRecords") in calls_in(ROOT / "consumer/shard/reader.py")
    ops = ("UpdateItem", "Scan", "DeleteItem", "GetItem", "PutItem")
    members = {("dynamodb", op) for op in ops}
    assert calls_in(ROOT / "consumer/lease/member_table.py") == members
    assert ("kinesis", "PutRecords") in calls_in(ROOT / "producer/shipper.py")
    lean = ROOT / "consumer/adapters/fastpath.py"
    if lean.exists():  # the lean path (issue 6) signs its own JSON calls
        assert {("kinesis", "GetRecords"), ("dynamodb", "BatchWriteItem")} <= calls_in(lean)


# --- least privilege ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alerts", "archive", "queue", "insights", "fanout"),
    [
        (False, False, False, False, False),
        (True, False, False, False, False),
        (False, True, False, False, False),
        (False, False, True, False, False),
        (False, True, True, False, False),
        (False, False, False, True, False),
        (False, False, False, False, True),
        (True, True, True, True, True),
    ],
    ids=["plain", "alerts", "archive", "queue", "queue-archive", "insights", "fanout", "all"],
)
def test_worker_policy_grants_exactly_the_calls_the_worker_makes(
    alerts: bool, archive: bool, queue: bool, insights: bool, fanout: bool
) -> None:
    base = load("telemax-base.yaml")
    policy = base["Resources"]["WorkerPolicy"]["Properties"]["PolicyDocument"]
    switches = {
        "HasAlerts": alerts,
        "HasArchive": archive,
        "HasQueue": queue,
        "HasInsights": insights,
        "HasFanOut": fanout,
    }
    conditions = derived(base, switches)
    expected = expected_grants(worker_modules(conditions))
    assert grants(policy, conditions) == expected
    assert (("kinesis:SubscribeToShard", "consumer") in expected) is fanout
    assert (("sns:Publish", "alerttopic") in expected) is alerts
    assert (("s3:PutObject", "archiveobjects") in expected) is archive
    assert (("sqs:DeleteMessage", "queue") in expected) is queue
    assert (("dynamodb:PutItem", "alerts") in expected) is (alerts or (queue and archive))
    assert (("dynamodb:BatchWriteItem", "insights") in expected) is insights


def test_producer_policy_grants_exactly_the_calls_the_producer_makes() -> None:
    base = load("telemax-base.yaml")
    policy = base["Resources"]["ProducerPolicy"]["Properties"]["PolicyDocument"]
    assert grants(policy) == expected_grants(sorted((ROOT / "producer").rglob("*.py")))


@pytest.mark.parametrize(
    ("alerts", "archive", "insights"),
    [
        (False, False, False),
        (True, False, False),
        (False, True, False),
        (False, False, True),
        (True, True, True),
    ],
    ids=["plain", "alerts", "archive", "insights", "all"],
)
def test_lambda_role_grants_the_event_source_mapping_and_the_handler_calls(
    alerts: bool, archive: bool, insights: bool
) -> None:
    lam = load("telemax-lambda.yaml")
    (policy,) = lam["Resources"]["FunctionRole"]["Properties"]["Policies"]
    conditions = {"HasAlerts": alerts, "HasArchive": archive, "HasInsights": insights}
    granted = grants(policy["PolicyDocument"], conditions)
    on = [m for m, condition in LAMBDA_CONDITIONAL.items() if conditions[condition]]
    handler = expected_grants([ROOT / m for m in (*LAMBDA_MODULES, *on)])
    assert {
        ("dynamodb:BatchWriteItem", "records"),
        ("dynamodb:BatchWriteItem", "deadletter"),
        ("dynamodb:DescribeTable", "records"),
    } <= handler
    assert (("sns:Publish", "alerttopic") in handler) is alerts
    assert (("s3:ListBucket", "archive") in handler) is archive
    assert (("dynamodb:Query", "insights") in handler) is insights
    event_source = {(action, "stream") for action in EVENT_SOURCE_MAPPING}
    assert granted - {g for g in granted if g[0].startswith(("sqs:", "logs:"))} == (
        handler | event_source
    )
    rest = {g[0] for g in granted if g[0].startswith(("sqs:", "logs:"))}
    assert rest == {"sqs:SendMessage", "logs:CreateLogStream", "logs:PutLogEvents"}


def test_lambda_reads_one_batch_per_shard_at_a_time_while_it_archives() -> None:
    lam = load("telemax-lambda.yaml")
    function = lam["Resources"]["Function"]["Properties"]
    for archive in (False, True):
        props = resolve(function, derived(lam, {"HasArchive": archive}))
        stream = props["Events"]["Stream"]["Properties"]
        expected = 1 if archive else {"Ref": "ParallelizationFactor"}
        assert stream["ParallelizationFactor"] == expected
        variables = props["Environment"]["Variables"]
        assert ("TELEMAX_ARCHIVE_BUCKET" in variables) is archive


def all_policies() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path in TEMPLATES:
        template = load(path.name)
        for name, res in template["Resources"].items():
            props = res.get("Properties", {})
            if res["Type"] == "AWS::IAM::ManagedPolicy":
                yield path.name, name, props["PolicyDocument"]
            for inline in props.get("Policies", []):
                yield path.name, name, inline["PolicyDocument"]


def test_no_policy_uses_wildcards_where_a_resource_can_be_named() -> None:
    # ecr:GetAuthorizationToken has no resource form in IAM: "*" is the only valid value.
    unrestrictable = {"ecr:GetAuthorizationToken"}
    seen = 0
    for template, name, policy in all_policies():
        for statement in statements(policy):
            seen += 1
            assert statement["Effect"] == "Allow"
            assert not any("*" in a for a in statement["Action"]), (template, name)
            if "*" in statement["Resource"]:
                assert set(statement["Action"]) <= unrestrictable, (template, name)
            for action in statement["Action"]:
                if action.startswith("kms:"):  # the key, and only through our services
                    assert [target(r) for r in statement["Resource"]] == ["key"]
                    assert "kms:ViaService" in statement["Condition"]["StringEquals"]
    assert seen >= 10


# --- the tools ---------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_cfn_lint_is_clean() -> None:
    assert len(TEMPLATES) == 3
    done = run(tool("cfn-lint"), "--format", "parseable", *TEMPLATES, timeout=80)
    assert done.returncode == 0, done.stdout + done.stderr


def checkov(directory: Path) -> dict[str, Any]:
    done = run(
        tool("checkov"), "--directory", directory, "--framework", "cloudformation",
        "--skip-download", "--output", "json", timeout=100,
    )  # fmt: skip
    assert done.stdout.strip(), done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    report["returncode"] = done.returncode
    return report


@pytest.mark.timeout(110)
def test_checkov_reports_no_failures_and_every_skip_is_justified() -> None:
    report = checkov(DEPLOY)
    summary = report["summary"]
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert failed == [] and report["returncode"] == 0
    assert summary["parsing_errors"] == 0
    declared = sum(len(load(p.name)["Resources"]) for p in TEMPLATES)
    assert summary["resource_count"] >= declared - 5  # conditional IRSA/KEDA/ingress resources
    assert summary["passed"] >= 60
    skipped = report["results"]["skipped_checks"]
    for check in skipped:
        assert len(check["check_result"].get("suppress_comment", "")) > 40, check["check_id"]
    # A skip written in a template must be one checkov actually applies (no stale skips).
    written = {
        (name, skip["id"])
        for path in TEMPLATES
        for name, res in load(path.name)["Resources"].items()
        for skip in res.get("Metadata", {}).get("checkov", {}).get("skip", [])
    }
    assert written == {(c["resource"].split(".")[-1], c["check_id"]) for c in skipped}


@pytest.mark.timeout(110)
def test_the_linters_fail_on_a_bad_template(tmp_path: Path) -> None:
    """cfn-lint and checkov are not no-ops here: an open, unencrypted table fails both."""
    (tmp_path / "bad.yaml").write_text(
        "AWSTemplateFormatVersion: '2010-09-09'\n"
        "Resources:\n"
        "  Table:\n"
        "    Type: AWS::DynamoDB::Table\n"
        "    Properties:\n"
        "      BillingMode: PAY_PER_REQUEST\n"
        "      KeySchema: [{AttributeName: id, KeyType: HASH}]\n"
        "      AttributeDefinitions: [{AttributeName: other, AttributeType: Z}]\n"
    )
    assert run(tool("cfn-lint"), tmp_path / "bad.yaml").returncode != 0
    report = checkov(tmp_path)
    assert {c["check_id"] for c in report["results"]["failed_checks"]} >= {"CKV_AWS_28"}


# --- agreement with the code -------------------------------------------------------------------


@pytest.mark.parametrize("feed", ["telemax", "taxi", "orders"])
def test_tables_and_names_match_what_setup_creates(feed: str) -> None:
    conditions = {"IsTelemax": feed == "telemax", "IsOrders": feed == "orders", "HasAlerts": True}
    base = resolve(load("telemax-base.yaml"), conditions)
    assert feed in base["Parameters"]["Feed"]["AllowedValues"]
    defaults = Settings(feed=feed)
    params = base["Parameters"]
    assert params["StreamName"]["Default"] == defaults.stream
    assert params["TableName"]["Default"] == defaults.table
    assert params["LeaseTableName"]["Default"] == defaults.lease_table
    assert params["MemberTableName"]["Default"] == defaults.member_table_name
    assert params["DeadLetterTableName"]["Default"] == defaults.dlq_table
    assert params["AlertLedgerTableName"]["Default"] == defaults.alert_ledger_table
    tables = resources(base, "AWS::DynamoDB::Table")
    by_param = {t["Properties"]["TableName"]["Ref"]: t["Properties"] for t in tables.values()}
    specs = {spec.role: spec for spec in table_specs(dataclasses.replace(defaults, insights=True))}
    assert params["InsightsTableName"]["Default"] == defaults.insights_table
    for role, param in (
        ("records", "TableName"),
        ("leases", "LeaseTableName"),
        ("members", "MemberTableName"),
        ("dead letters", "DeadLetterTableName"),
        *([("ledger", "AlertLedgerTableName")] if feed == "orders" else []),
        ("insights", "InsightsTableName"),
    ):
        props = by_param[param]
        keys = tuple((k["AttributeName"], k["KeyType"]) for k in props["KeySchema"])
        assert keys == specs[role].keys, role
        types = tuple(a["AttributeType"] for a in props["AttributeDefinitions"])
        assert types == (specs[role].types or ("S",) * len(keys)), role
        assert props["SSESpecification"]["SSEEnabled"] is True
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    (stream,) = resources(base, "AWS::Kinesis::Stream").values()
    assert stream["Properties"]["StreamEncryption"]["EncryptionType"] == "KMS"
    assert stream["Properties"]["ShardCount"] == {"Ref": "ShardCount"}


def check_environment(variables: dict[str, Any]) -> None:
    for name, value in variables.items():
        if name.startswith("TELEMAX_"):
            assert name in OPTION_BY_ENV, f"{name} is not a telemax setting"
            if isinstance(value, str):
                OPTION_BY_ENV[name].parse(value)
        else:
            assert name.startswith("AWS_"), name


@pytest.mark.parametrize("alerts", [False, True], ids=["plain", "alerts-archive"])
def test_ecs_task_runs_the_image_as_built(alerts: bool) -> None:
    template = load("telemax-ecs.yaml")
    switches = {"HasAlerts": alerts, "HasArchive": alerts, "HasQueue": alerts}
    ecs = resolve(template, derived(template, switches))
    (task,) = resources(ecs, "AWS::ECS::TaskDefinition").values()
    (container,) = task["Properties"]["ContainerDefinitions"]
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    check_environment(env)
    assert ("TELEMAX_ALERT_TOPIC_ARN" in env) is alerts
    assert ("TELEMAX_ALERT_LEDGER_TABLE" in env) is alerts
    assert ("TELEMAX_ARCHIVE_BUCKET" in env) is alerts
    assert (env.get("TELEMAX_SOURCE") == "sqs") is alerts
    assert env["TELEMAX_FEED"] == {"Ref": "Feed"}
    tables = {"TELEMAX_TABLE", "TELEMAX_LEASE_TABLE", "TELEMAX_MEMBER_TABLE", "TELEMAX_DLQ_TABLE"}
    assert {"TELEMAX_STREAM", *tables} <= set(env)
    assert env["AWS_DEFAULT_REGION"] == env["AWS_REGION"]  # botocore reads the first only
    port = int(env["TELEMAX_METRICS_PORT"])
    assert [p["ContainerPort"] for p in container["PortMappings"]] == [port]
    assert f"127.0.0.1:{port}/healthz" in " ".join(container["HealthCheck"]["Command"])
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"USER {container['User']}" in dockerfile
    assert container["ReadonlyRootFilesystem"] is True
    assert container["Command"] == ["run"]
    # ECS waits StopTimeout after SIGTERM: more than the worker's drain budget, always.
    grace = ecs["Parameters"]["ShutdownGraceSeconds"]
    assert container["StopTimeout"] == {
        "Fn::FindInMap": ["StopTimeout", {"Ref": "ShutdownGraceSeconds"}, "Seconds"]
    }
    for value in grace["AllowedValues"]:
        OPTION_BY_ENV["TELEMAX_SHUTDOWN_GRACE_S"].parse(value)
        assert ecs["Mappings"]["StopTimeout"][value]["Seconds"] > float(value)
        assert ecs["Mappings"]["StopTimeout"][value]["Seconds"] <= 120  # Fargate's maximum


def test_lambda_function_uses_the_handler_and_partial_failures() -> None:
    lam = load("telemax-lambda.yaml")
    props = lam["Resources"]["Function"]["Properties"]
    module, _, name = props["Handler"].rpartition(".")
    assert callable(getattr(__import__(module, fromlist=[name]), name))
    check_environment(props["Environment"]["Variables"])
    assert (DEPLOY / props["CodeUri"]).resolve() == ROOT / "build" / "lambda"
    assert "out=build/lambda" in (DEPLOY / "lambda" / "build.sh").read_text()
    stream = props["Events"]["Stream"]["Properties"]
    assert stream["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert stream["BisectBatchOnFunctionError"] is True
    assert stream["MaximumRetryAttempts"] == {"Ref": "MaximumRetryAttempts"}
    assert stream["DestinationConfig"]["OnFailure"]["Destination"] == {
        "Fn::GetAtt": ["FailedBatches", "Arn"]
    }


def test_log_metric_filters_match_events_the_code_logs() -> None:
    """The dead-letter alarms count `records_dead_lettered` events' `count` field."""
    pattern = re.compile(r'"records_dead_lettered",\s*count=')
    # the write stage logs it, for the worker and the Lambda handler alike
    assert pattern.search((ROOT / "consumer/pipeline/stage.py").read_text())
    filters = [
        f
        for path in ("telemax-ecs.yaml", "telemax-lambda.yaml")
        for f in resources(load(path), "AWS::Logs::MetricFilter").values()
    ]
    dead = [f for f in filters if "records_dead_lettered" in f["Properties"]["FilterPattern"]]
    assert len(dead) == 2
    for f in dead:
        assert f["Properties"]["FilterPattern"] == '{ $.event = "records_dead_lettered" }'
        assert f["Properties"]["MetricTransformations"][0]["MetricValue"] == "$.count"


def test_the_archive_bucket_is_private_encrypted_versioned_and_ages_to_infrequent_access() -> None:
    base = resolve(load("telemax-base.yaml"), {"HasArchive": True})
    bucket = base["Resources"]["ArchiveBucket"]
    assert bucket["Condition"] == "HasArchive"
    props = bucket["Properties"]
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": {"Fn::GetAtt": ["Key", "Arn"]},
    }
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert all(props["PublicAccessBlockConfiguration"].values())
    transitions = props["LifecycleConfiguration"]["Rules"][0]["Transitions"]
    assert {"StorageClass": "STANDARD_IA", "TransitionInDays": 30} in transitions
    assert base["Parameters"]["ArchivePrefix"]["Default"] == Settings().archive_prefix
    assert base["Outputs"]["ArchiveBucketName"]["Value"] == {"Ref": "ArchiveBucket"}
