"""The request botocore's own client makes of a call, as it would go out, stopped before it is
sent: what the lean adapters' tests compare their bodies, addresses and signatures with."""

from __future__ import annotations

from typing import Any

import botocore.session
import pytest
from botocore.awsrequest import AWSRequest

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
ENDPOINT = "http://127.0.0.1:5000"


class Captured(Exception):
    """botocore's request, stopped before it is sent."""


def botocores_request(service: str, operation: str, token: str | None, **params: Any) -> AWSRequest:
    """``operation`` of ``service`` with ``params``, as botocore's client (eu-west-1, at
    ENDPOINT, the key AKIDEXAMPLE and SECRET, ``token``) would send it."""
    client: Any = botocore.session.get_session().create_client(
        service,
        region_name="eu-west-1",
        endpoint_url=ENDPOINT,
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key=SECRET,
        aws_session_token=token,
    )
    sent: list[AWSRequest] = []

    def capture(request: AWSRequest, **_: Any) -> None:
        sent.append(request)
        raise Captured

    client.meta.events.register(f"before-send.{service}.{operation}", capture)
    with pytest.raises(Captured):
        getattr(client, botocore.xform_name(operation))(**params)
    return sent[0]
