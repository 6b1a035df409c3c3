"""TLS to Qdrant: a node behind a private CA is reached with tls.ca_bundle, refused without it
(one sentence), and reached with tls.verify: false only under a loud warning."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.helpers import make_collection, qbr, write_manifest


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qbr-test-ca")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "node.pem", folder / "node.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class TlsFront:
    """A TLS terminator in front of a plain emulator node (as a load balancer would be)."""

    def __init__(self, backend: str, cert: Path, key: Path) -> None:
        self.backend = backend.removeprefix("http://").split(":")
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            client = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        upstream = socket.create_connection((self.backend[0], int(self.backend[1])))
        threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()
        self._pipe(client, upstream)

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def tls_node(emulator, tmp_path):
    cluster = emulator(nodes=1)
    make_collection(cluster.urls[0], "docs", points=7)
    cert, key = _self_signed(tmp_path)
    front = TlsFront(cluster.urls[0], cert, key)
    yield front, cert
    front.close()


def _manifest(folder: Path, url: str, tls: str) -> None:
    write_manifest(folder, f"""
version: 1
clusters:
  prod: {{url: "{url}"{tls}}}
repositories:
  main: {{path: ./repo}}
backups:
  nightly: {{cluster: prod, repository: main, rpo: 1h}}
""")


def test_a_node_behind_a_private_ca_is_refused_then_reached_with_its_ca_bundle(tls_node, tmp_path):
    front, cert = tls_node
    _manifest(tmp_path, front.url, "")
    refused = qbr("plan", cwd=tmp_path, env={"QBR_HTTP_RETRIES": "0"})
    assert refused.exit_code == 1 and "TLS certificate could not be verified" in refused.stderr and "tls.ca_bundle" in refused.stderr
    assert "Traceback" not in refused.output
    _manifest(tmp_path, front.url, f", tls: {{ca_bundle: {cert}}}")
    run = qbr("apply", "--auto-approve", cwd=tmp_path)
    assert run.exit_code == 0, run.output
    assert "Warning" not in run.output


def test_verification_off_works_under_a_loud_warning(tls_node, tmp_path):
    front, _ = tls_node
    _manifest(tmp_path, front.url, ", tls: {verify: false}")
    run = qbr("plan", cwd=tmp_path)
    assert run.exit_code == 0, run.output
    assert "TLS certificates are NOT verified" in run.output
