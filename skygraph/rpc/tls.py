"""TLS for the link: the analyzer's certificate (plus, for mutual TLS, the CA its
agents' certificates must chain to) and the agent's trust (plus its own
certificate for mutual TLS), as values loadable from PEM files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc


def read_pem(path: str, key: str) -> bytes:
    """The file's bytes; an error names the setting (`key`) and the file."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{key}: cannot read {path}: {exc.strerror}") from None


@dataclass(frozen=True)
class ServerTLS:
    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None = None   # set: agents must present a certificate signed by it

    @classmethod
    def from_files(cls, cert_file: str, key_file: str, client_ca_file: str = "",
                   key: str = "analyzer.rpc.tls") -> ServerTLS:
        return cls(read_pem(cert_file, f"{key}.cert_file"), read_pem(key_file, f"{key}.key_file"),
                   read_pem(client_ca_file, f"{key}.client_ca_file") if client_ca_file else None)

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.private_key, self.cert_chain)],
                                           root_certificates=self.client_ca,
                                           require_client_auth=self.client_ca is not None)


@dataclass(frozen=True)
class ClientTLS:
    ca: bytes | None = None            # what the analyzer's certificate chains to (None: system CAs)
    cert_chain: bytes | None = None    # the agent's own certificate, for mutual TLS
    private_key: bytes | None = None
    server_name: str = ""              # name expected in the analyzer's certificate, if not its host

    @classmethod
    def from_files(cls, ca_file: str = "", cert_file: str = "", key_file: str = "",
                   server_name: str = "", key: str = "agent.rpc.tls") -> ClientTLS:
        return cls(read_pem(ca_file, f"{key}.ca_file") if ca_file else None,
                   read_pem(cert_file, f"{key}.cert_file") if cert_file else None,
                   read_pem(key_file, f"{key}.key_file") if key_file else None, server_name)

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca, private_key=self.private_key,
                                            certificate_chain=self.cert_chain)
