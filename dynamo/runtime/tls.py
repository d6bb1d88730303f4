"""TLS on the request plane, as NVIDIA Dynamo configures it (`DYN_TCP_TLS_*` / `--tcp-tls-*`), and
to NATS (`NATS_TLS_*` / `--nats-tls-*`: a CA, or insecure, turns it on; a client certificate makes it
mutual).

- A process with a certificate and key serves its request-plane endpoints over TLS; with a client
  CA it also demands and verifies callers' certificates (mutual TLS).
- A process with a CA (or `insecure`) calls workers over TLS, verifying each worker's certificate
  against that CA and the address's host (or `server_name`); with a client certificate and key it
  presents them.
Plaintext is never a fallback: a TLS caller cannot reach a plaintext worker, nor the reverse.
A file that cannot be read is a start-up error naming its variable.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass

from dynamo.runtime.settings import RuntimeSettings


class TlsConfigError(ValueError):
    pass


def server_context(settings: RuntimeSettings) -> ssl.SSLContext | None:
    """The request-plane server's context, or None for plaintext."""
    cert, key = settings.tcp_tls_cert_path, settings.tcp_tls_key_path
    if not cert and not key:
        if settings.tcp_tls_client_ca_cert_path:
            raise TlsConfigError("DYN_TCP_TLS_CLIENT_CA_CERT_PATH needs the server's own certificate "
                                 "(DYN_TCP_TLS_CERT_PATH and DYN_TCP_TLS_KEY_PATH)")
        return None
    if not (cert and key):
        raise TlsConfigError("DYN_TCP_TLS_CERT_PATH and DYN_TCP_TLS_KEY_PATH go together")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, cert, key, "DYN_TCP_TLS_CERT_PATH / DYN_TCP_TLS_KEY_PATH")
    if settings.tcp_tls_client_ca_cert_path:
        context.verify_mode = ssl.CERT_REQUIRED
        _load_ca(context, settings.tcp_tls_client_ca_cert_path, "DYN_TCP_TLS_CLIENT_CA_CERT_PATH")
    return context


def client_context(settings: RuntimeSettings) -> ssl.SSLContext | None:
    """The context this process calls workers with, or None for plaintext."""
    return caller_context(settings.tcp_tls_ca_cert_path, settings.tcp_tls_insecure, settings.tcp_tls_client_cert_path,
                          settings.tcp_tls_client_key_path, _path_names("DYN_TCP_TLS_"))


def nats_context(settings: RuntimeSettings) -> ssl.SSLContext | None:
    """The context NATS connections use, or None for plaintext."""
    return caller_context(settings.nats_tls_ca_cert_path, settings.nats_tls_insecure,
                          settings.nats_tls_client_cert_path, settings.nats_tls_client_key_path,
                          _path_names("NATS_TLS_"))


def _path_names(prefix: str) -> tuple[str, str, str]:
    return f"{prefix}CA_CERT_PATH", f"{prefix}CLIENT_CERT_PATH", f"{prefix}CLIENT_KEY_PATH"


def caller_context(ca: str | None, insecure: bool, cert: str | None, key: str | None, names: tuple[str, str, str],
                   pem_text: bool = False) -> ssl.SSLContext | None:
    """A connecting side's context: on when a CA, insecure or a client certificate is set; `names` are the
    variables of the CA, certificate and key, for errors. With `pem_text` each value may also be the PEM text
    itself rather than a file's path (etcd's ETCD_AUTH_*, as NVIDIA Dynamo reads them)."""
    if not (ca or insecure or cert or key):
        return None
    if bool(cert) != bool(key):
        raise TlsConfigError(f"{names[1]} and {names[2]} go together")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif ca:
        _load_ca(context, ca, names[0], pem_text)
    else:
        context.load_default_certs()
    if cert and key:
        _load_chain(context, cert, key, f"{names[1]} / {names[2]}", pem_text)
    return context


def _load_chain(context: ssl.SSLContext, cert: str, key: str, names: str, pem_text: bool = False) -> None:
    try:
        if pem_text and (_is_pem(cert) or _is_pem(key)):
            # ssl loads a certificate chain from files only: PEM text goes through a private temp dir.
            with tempfile.TemporaryDirectory(prefix="dyn-tls-") as tmp:
                context.load_cert_chain(_as_file(cert, tmp, "cert.pem"), _as_file(key, tmp, "key.pem"))
        else:
            context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        shown = (_shown(cert), _shown(key)) if pem_text else (cert, key)
        raise TlsConfigError(f"{names}: cannot load {shown[0]} / {shown[1]}: {exc}") from None


def _load_ca(context: ssl.SSLContext, ca: str, name: str, pem_text: bool = False) -> None:
    try:
        context.load_verify_locations(**({"cadata": ca} if pem_text and _is_pem(ca) else {"cafile": ca}))
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(f"{name}: cannot load {_shown(ca) if pem_text else ca}: {exc}") from None


def _is_pem(value: str) -> bool:
    return value.lstrip().startswith("-----BEGIN")


def _shown(value: str) -> str:
    return "(PEM text)" if _is_pem(value) else value  # never echo a key


def _as_file(value: str, tmp: str, name: str) -> str:
    if not _is_pem(value):
        return value
    path = os.path.join(tmp, name)
    with open(path, "w", opener=lambda p, flags: os.open(p, flags, 0o600)) as fh:
        fh.write(value)
    return path


@dataclass(frozen=True)
class ClientTls:
    """How this process calls workers over TLS."""

    context: ssl.SSLContext
    server_name: str | None
    handshake_timeout: float

    @classmethod
    def of(cls, settings: RuntimeSettings) -> ClientTls | None:
        context = client_context(settings)
        if context is None:
            return None
        return cls(context, settings.tcp_tls_server_name, settings.tcp_tls_handshake_timeout_secs)

    def hostname(self, host: str) -> str:
        return self.server_name or host


@dataclass(frozen=True)
class ServerTls:
    """How this process's request-plane server accepts TLS."""

    context: ssl.SSLContext
    handshake_timeout: float

    @classmethod
    def of(cls, settings: RuntimeSettings) -> ServerTls | None:
        context = server_context(settings)
        return None if context is None else cls(context, settings.tcp_tls_handshake_timeout_secs)
