"""The lean start (consumer.adapters.lean): when botocore's resolution is ours, and the client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from consumer.adapters.credentials import ContainerSource, StaticCredentials
from consumer.adapters.fastpath import operation_of
from consumer.adapters.lean import Environment, LeanClient, environment_of, open_lean_clients
from consumer.adapters.web_identity import WebIdentitySource

BASE = {"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_REGION": "eu-west-1"}


def resolved(tmp_path: Path, **env: str) -> Environment | str:
    return environment_of({**BASE, **env}, tmp_path)


def test_endpoints_follow_the_region_and_the_environment_as_botocore_does(tmp_path: Path) -> None:
    found = resolved(tmp_path, AWS_SESSION_TOKEN="tok")
    assert isinstance(found, Environment)
    assert found.kinesis_endpoint == "https://kinesis.eu-west-1.amazonaws.com"
    assert found.dynamodb_endpoint == "https://dynamodb.eu-west-1.amazonaws.com"
    assert found.sqs_endpoint == "https://sqs.eu-west-1.amazonaws.com"
    assert found.sns_endpoint == "https://sns.eu-west-1.amazonaws.com"
    assert isinstance(found.credentials, StaticCredentials)
    assert found.credentials.frozen == ("AKID", "secret", "tok")
    assert found.ca_bundle is None
    china = resolved(tmp_path, AWS_REGION="cn-north-1")
    assert isinstance(china, Environment)
    assert china.dynamodb_endpoint == "https://dynamodb.cn-north-1.amazonaws.com.cn"
    first = resolved(tmp_path, AWS_DEFAULT_REGION="us-east-2")  # botocore's variable first
    assert isinstance(first, Environment) and first.region == "us-east-2"
    local = resolved(
        tmp_path,
        AWS_ENDPOINT_URL="http://127.0.0.1:1",
        AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:2",
        AWS_CA_BUNDLE="/roots.pem",
    )
    assert isinstance(local, Environment)
    assert (local.kinesis_endpoint, local.dynamodb_endpoint) == (
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
    )
    assert local.ca_bundle == "/roots.pem"
    assert (local.sqs_endpoint, local.sns_endpoint) == ("http://127.0.0.1:1",) * 2
    ignored = resolved(
        tmp_path, AWS_ENDPOINT_URL="http://x:1", AWS_IGNORE_CONFIGURED_ENDPOINT_URLS="true"
    )
    assert isinstance(ignored, Environment)
    assert ignored.kinesis_endpoint == "https://kinesis.eu-west-1.amazonaws.com"


async def test_a_service_without_a_lean_client_is_refused(tmp_path: Path) -> None:
    found = resolved(tmp_path)
    assert isinstance(found, Environment)
    with pytest.raises(ValueError, match=r"no lean client for \['sts'\]"):
        async with open_lean_clients(found, read_timeout=1, attempts=1, services=("sns", "sts")):
            pass


@pytest.mark.parametrize(
    ("env", "why"),
    [
        ({"AWS_PROFILE": "prod"}, "AWS_PROFILE is set"),
        ({"AWS_ACCOUNT_ID": "123456789012"}, "AWS_ACCOUNT_ID is set"),
        ({"AWS_USE_FIPS_ENDPOINT": "true"}, "AWS_USE_FIPS_ENDPOINT is true"),
        ({"AWS_USE_DUALSTACK_ENDPOINT": "TRUE"}, "AWS_USE_DUALSTACK_ENDPOINT is true"),
        ({"AWS_SECRET_ACCESS_KEY": ""}, "the credentials in the environment are partial"),
        (
            {"AWS_SECRET_ACCESS_KEY": "", "AWS_ACCESS_KEY_ID": ""},
            "the credentials are not in the environment",
        ),
        (
            {
                "AWS_SECRET_ACCESS_KEY": "",
                "AWS_ACCESS_KEY_ID": "",
                "AWS_WEB_IDENTITY_TOKEN_FILE": "/t",
            },
            "AWS_WEB_IDENTITY_TOKEN_FILE without AWS_ROLE_ARN is for botocore to refuse",
        ),
        (
            {"AWS_SECRET_ACCESS_KEY": "", "AWS_ACCESS_KEY_ID": "", "BOTO_CONFIG": "/b.cfg"},
            "BOTO_CONFIG is set",
        ),
        ({"AWS_REGION": ""}, "no region in the environment"),
        ({"AWS_REGION": "us-isob-east-1"}, "region 'us-isob-east-1' is for botocore to resolve"),
        ({"AWS_REGION": "Not A Region"}, "region 'Not A Region' is for botocore to resolve"),
    ],
)
def test_anything_botocore_resolves_otherwise_takes_the_generic_clients(
    tmp_path: Path, env: dict[str, str], why: str
) -> None:
    assert resolved(tmp_path, **env) == why


def test_a_config_or_credentials_file_takes_the_generic_clients(tmp_path: Path) -> None:
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "credentials").write_text("[default]\n")
    assert resolved(tmp_path) == f"{tmp_path / '.aws' / 'credentials'} exists"
    named = tmp_path / "elsewhere.ini"
    named.write_text("[default]\n")
    assert resolved(tmp_path / "nohome", AWS_CONFIG_FILE=str(named)) == f"{named} exists"
    assert isinstance(resolved(tmp_path / "nohome", AWS_CONFIG_FILE="/nonexistent"), Environment)


NO_KEYS = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
RELATIVE = {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/abc"}


def test_a_web_identity_comes_before_the_container_endpoint(tmp_path: Path) -> None:
    identity = {"AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/token", "AWS_ROLE_ARN": "arn:role"}
    found = resolved(tmp_path, **NO_KEYS, **RELATIVE, **identity)
    assert isinstance(found, Environment)
    assert found.credentials == WebIdentitySource(
        "arn:role", "/var/run/token", None, "https://sts.eu-west-1.amazonaws.com"
    )
    local = resolved(tmp_path, **NO_KEYS, **identity, AWS_ENDPOINT_URL="http://127.0.0.1:1")
    assert isinstance(local, Environment)
    assert isinstance(local.credentials, WebIdentitySource)
    assert local.credentials.sts_endpoint == "http://127.0.0.1:1"


def test_a_container_endpoint_takes_the_lean_path_when_no_keys_are_set(tmp_path: Path) -> None:
    found = resolved(tmp_path, **NO_KEYS, **RELATIVE)
    assert isinstance(found, Environment)
    assert found.credentials == ContainerSource("http://169.254.170.2/v2/credentials/abc")
    keys_first = resolved(tmp_path, **RELATIVE)  # botocore asks the environment's keys first
    assert isinstance(keys_first, Environment)
    assert isinstance(keys_first.credentials, StaticCredentials)
    (tmp_path / ".boto").write_text("[Credentials]\n")  # boto's file comes before the container
    assert resolved(tmp_path, **NO_KEYS, **RELATIVE) == f"{tmp_path / '.boto'} exists"


@pytest.mark.parametrize(
    ("method", "operation"),
    [
        ("describe_table", "DescribeTable"),
        ("describe_stream_summary", "DescribeStreamSummary"),
        ("list_shards", "ListShards"),
        ("batch_write_item", "BatchWriteItem"),
        ("describe_time_to_live", "DescribeTimeToLive"),
    ],
)
def test_operation_names(method: str, operation: str) -> None:
    assert operation_of(method) == operation


class RecordingApi:
    def __init__(self, signing_name: str, answer: Any) -> None:
        self.signing_name = signing_name
        self.answer = answer
        self.sent: list[tuple[str, Any]] = []

    async def call(self, operation: str, body: bytes) -> Any:
        self.sent.append((operation, orjson.loads(body)))
        return self.answer


async def test_a_call_sends_its_arguments_as_json_and_answers_botocores_shapes() -> None:
    from datetime import UTC, datetime

    api = RecordingApi("dynamodb", {"Item": {"k": {"S": "a"}, "state": {"B": "AAE="}}})
    client = LeanClient(api, endpoint="http://x", region="r", attempts=1)  # type: ignore[arg-type]
    answer = await client.get_item(TableName="t", Key={"k": {"S": "a"}})
    assert answer["Item"]["state"] == {"B": b"\x00\x01"}, "binary attributes as bytes"
    assert api.sent == [("GetItem", {"TableName": "t", "Key": {"k": {"S": "a"}}})]
    assert client.meta.endpoint_url == "http://x" and client.meta.region_name == "r"
    kinesis = RecordingApi("kinesis", {"Shards": []})
    lean = LeanClient(kinesis, endpoint="http://y", region="r", attempts=1)  # type: ignore[arg-type]
    when = datetime(2026, 12, 4, tzinfo=UTC)
    await lean.list_shards(StreamName="s", ShardFilter={"Type": "AT_TIMESTAMP", "Timestamp": when})
    assert kinesis.sent[0][1]["ShardFilter"]["Timestamp"] == when.timestamp()
    with pytest.raises(AttributeError):
        _ = client._private
