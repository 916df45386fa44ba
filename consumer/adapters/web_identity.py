"""A web identity token exchanged for credentials with STS (IRSA on EKS), as botocore's
``AssumeRoleWithWebIdentityProvider`` does it from the environment; refreshed by
:class:`~consumer.adapters.credentials.RefreshingCredentials`.

The exchange is one unsigned ``AssumeRoleWithWebIdentity`` (the Query protocol: a form POST,
an XML answer) to STS' regional endpoint, or to ``AWS_ENDPOINT_URL_STS``/``AWS_ENDPOINT_URL``;
the token file is read at each exchange (the kubelet rotates it).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode
from xml.etree import ElementTree

from botocore.exceptions import CredentialRetrievalError

from consumer.adapters.credentials import Frozen, with_attempts
from consumer.adapters.http1 import Http1Pool
from consumer.adapters.tls import client_context

PROVIDER = "assume-role-with-web-identity"  # botocore's name for it, in errors
TIMEOUT_S = 10.0
# STS' answers tried again, as botocore's retry rules for STS do (besides 5xx)
_RETRIED = frozenset({"IDPCommunicationError", "Throttling", "RequestLimitExceeded"})


@dataclasses.dataclass(frozen=True)
class WebIdentitySource:
    role_arn: str
    token_file: str
    session_name: str | None
    sts_endpoint: str  # https://sts.{region}.amazonaws.com, or the configured one
    ca_bundle: str | None = None


def web_identity_source(
    env: Mapping[str, str], region: str, endpoint: str | None
) -> WebIdentitySource | str | None:
    """The web identity ``env`` names (None: none; a string: why botocore must resolve it).
    ``endpoint``: a configured STS endpoint."""
    token_file = env.get("AWS_WEB_IDENTITY_TOKEN_FILE")
    if not token_file:
        return None
    role_arn = env.get("AWS_ROLE_ARN")
    if not role_arn:
        return "AWS_WEB_IDENTITY_TOKEN_FILE without AWS_ROLE_ARN is for botocore to refuse"
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return WebIdentitySource(
        role_arn,
        token_file,
        env.get("AWS_ROLE_SESSION_NAME"),
        endpoint or f"https://sts.{region}.{suffix}",
        env.get("AWS_CA_BUNDLE") or None,
    )


async def fetch_web_identity(source: WebIdentitySource) -> tuple[Frozen, float]:
    """One exchange (its attempts included): the credentials and their expiry (epoch s)."""

    async def attempt() -> tuple[int, bytes]:
        form = {
            "Action": "AssumeRoleWithWebIdentity",
            "Version": "2011-06-15",
            "RoleArn": source.role_arn,
            "RoleSessionName": source.session_name or f"botocore-session-{int(time.time())}",
            "WebIdentityToken": read_token(source.token_file),  # rotated: read each time
        }
        secure = source.sts_endpoint.startswith("https:")
        pool = Http1Pool(
            source.sts_endpoint.rstrip("/") + "/",
            size=1,
            read_timeout=TIMEOUT_S,
            ssl_context=client_context(source.ca_bundle) if secure else None,
        )
        headers = {
            "Host": source.sts_endpoint.split("://", 1)[1].split("/", 1)[0],
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
        }
        try:
            status, _, body = await pool.post(urlencode(form).encode(), headers)
        finally:
            pool.close()
        return status, body

    def refused(status: int, body: bytes) -> tuple[str, bool]:
        code, message = _error_of(body)
        return f"{code or status}: {message}", status >= 500 or code in _RETRIED

    return parse_answer(await with_attempts(attempt, refused, PROVIDER))


def read_token(path: str) -> str:
    """The token (a few hundred bytes of a local file, read in the loop: once an hour)."""
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise CredentialRetrievalError(
            provider=PROVIDER, error_msg=f"the web identity token: {exc}"
        ) from None


def parse_answer(body: bytes) -> tuple[Frozen, float]:
    try:
        root = ElementTree.fromstring(body)
        found = root.find(".//{*}Credentials")
        if found is None:
            raise ValueError("no Credentials element")
        values = {child.tag.rpartition("}")[2]: child.text or "" for child in found}
        frozen = Frozen(values["AccessKeyId"], values["SecretAccessKey"], values["SessionToken"])
        expiry = datetime.fromisoformat(values["Expiration"]).timestamp()
    except (ElementTree.ParseError, ValueError, KeyError) as exc:
        raise CredentialRetrievalError(
            provider=PROVIDER, error_msg=f"not credentials: {type(exc).__name__}: {exc}"
        ) from None
    return frozen, expiry


def _error_of(body: bytes) -> tuple[str, str]:
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return "", body[:200].decode(errors="replace")
    return root.findtext(".//{*}Code") or "", root.findtext(".//{*}Message") or ""
