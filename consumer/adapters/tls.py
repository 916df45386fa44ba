"""TLS for the lean paths (records over HTTP/1.1, fan-out over HTTP/2), verified exactly as
botocore verifies the generic clients: the bundle ``AWS_CA_BUNDLE`` or the profile's
``ca_bundle`` names, else botocore's own default (certifi's). A worker behind a TLS-inspecting
proxy, or on a VPC endpoint with a private CA, then trusts the same roots on every path —
not the control plane on one set and the records on another."""

from __future__ import annotations

import os
import ssl

from kernel.errors import ConfigError


def default_bundle() -> str:
    """botocore's default roots (``botocore.httpsession.get_cert_path(True)``: certifi's
    bundle, else the one botocore ships), without importing its HTTP stack (urllib3)."""
    try:
        from certifi import where
    except ImportError:  # as botocore: its own copy
        import botocore

        return os.path.join(os.path.dirname(botocore.__file__), "cacert.pem")
    return str(where())


def client_context(ca_bundle: str | None = None) -> ssl.SSLContext:
    """A verifying client context (hostname checked) trusting ``ca_bundle`` or botocore's
    default roots; a bundle that cannot be read stops start-up with one line."""
    path = ca_bundle or default_bundle()
    try:
        if os.path.isdir(path):  # a c_rehash'ed directory, as botocore also accepts
            return ssl.create_default_context(capath=path)
        return ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"AWS_CA_BUNDLE {path!r} cannot be used: {exc}") from None
