"""The database client over mutual TLS (`ssl:` remotes), as members will reach each other's
database: a real ovsdb-server with a `pssl:` listener and certificates from a throwaway CA.
A client whose certificate another CA signed, or one that trusts another CA, gets a clear error
naming the address, and writes nothing."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from microcloudd.api.errors import Unavailable
from microcloudd.db.database import Database
from microcloudd.db.records import Config
from tests.fixtures.db import free_port, start_db_server, stop_db_server

Ca = tuple[ec.EllipticCurvePrivateKey, x509.Certificate, Path]  # key, certificate, its PEM file


@dataclass
class Pki:
    dir: Path

    def ca(self, name: str) -> Ca:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = self._cert(subject, subject, key.public_key(), key, ca=True)
        path = self.dir / f"{name}.pem"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return key, cert, path

    def leaf(self, name: str, ca: Ca) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), ca[1].subject,
                          key.public_key(), ca[0], ca=False)
        key_path, cert_path = self.dir / f"{name}.key", self.dir / f"{name}.crt"
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_path.chmod(0o600)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return key_path, cert_path

    @staticmethod
    def _cert(subject: x509.Name, issuer: x509.Name, public: ec.EllipticCurvePublicKey,
              signer: ec.EllipticCurvePrivateKey, *, ca: bool) -> x509.Certificate:
        now = datetime.datetime.now(datetime.UTC)
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                .sign(signer, hashes.SHA256()))


@dataclass
class TlsServer:
    remote: str
    ca: Path
    client: tuple[Path, Path]
    pki: Pki


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[TlsServer]:
    pki = Pki(tmp_path)
    ca = pki.ca("cluster-ca")
    server_key, server_cert = pki.leaf("member-1", ca)
    port = free_port()
    server = start_db_server(remotes=(f"pssl:{port}:127.0.0.1",), ssl=(server_key, server_cert, ca[2]))
    try:
        yield TlsServer(f"ssl:127.0.0.1:{port}", ca[2], pki.leaf("member-2", ca), pki)
    finally:
        stop_db_server(server)


async def test_reads_and_writes_over_mutual_tls(tls_server: TlsServer) -> None:
    key, cert = tls_server.client
    db = await Database.connect(tls_server.remote, ssl=(key, cert, tls_server.ca))
    try:
        await db.insert(Config(key="core.https_address", value="10.0.0.1:9443"))
        assert db.get(Config, "core.https_address").value == "10.0.0.1:9443"
    finally:
        await db.close()


async def test_a_certificate_of_another_ca_is_refused(tls_server: TlsServer) -> None:
    rogue_ca = tls_server.pki.ca("rogue-ca")
    key, cert = tls_server.pki.leaf("intruder", rogue_ca)
    # TLS 1.3: the server refuses the certificate after the client's side of the handshake, so
    # the client sees either the server's alert or the connection closed under its first write.
    with pytest.raises(Unavailable, match=r"ssl:127\.0\.0\.1:\d+.*(unknown ca|connection was lost)"):
        await Database.connect(tls_server.remote, ssl=(key, cert, tls_server.ca), write_timeout=3)
    # Trusting another CA: the server's certificate does not verify.
    key, cert = tls_server.client
    with pytest.raises(Unavailable, match="certificate verify failed"):
        await Database.connect(tls_server.remote, ssl=(key, cert, rogue_ca[2]), write_timeout=3)
    # Nothing got in: a good client sees an empty Config table.
    db = await Database.connect(tls_server.remote, ssl=(key, cert, tls_server.ca))
    try:
        assert db.all(Config) == []
    finally:
        await db.close()


async def test_an_ssl_address_without_certificates_is_a_clear_error(tls_server: TlsServer) -> None:
    with pytest.raises(Unavailable, match="needs the key, certificate and CA"):
        await Database.connect(tls_server.remote, write_timeout=2)
