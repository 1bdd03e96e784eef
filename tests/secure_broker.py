"""A mosquitto that only speaks TLS and only to known users, for the security tests.

A throw-away CA and a server certificate for 127.0.0.1/localhost are made with `cryptography`; users
go into a password file through `mosquitto_passwd`; an ACL file gives each user its topics.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from livetok.bench.localbroker import Broker

__all__ = ["SecureBroker", "make_ca_and_server_cert"]


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def make_ca_and_server_cert(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """Write ca.pem, server.pem and server.key (P-256, valid for a day) into `folder`."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("livetok test CA")).issuer_name(_name("livetok test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(host)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host)),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    ca_path, cert_path, key_path = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, key_path)
    return ca_path, cert_path, key_path


def find_mosquitto_passwd() -> str | None:
    return shutil.which("mosquitto_passwd") or shutil.which("mosquitto_passwd", path="/usr/bin:/usr/sbin")


class SecureBroker(Broker):
    """mosquitto with TLS only, no anonymous clients, a password file and an ACL.

    Args:
        users: user name -> password.
        acl: user name -> ACL lines for that user (e.g. "topic readwrite livetok/cam0/#").
    """

    def __init__(self, binary: str, workdir: Path, users: dict[str, str], acl: dict[str, list[str]]) -> None:
        super().__init__(binary, workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self.ca_file, self.cert_file, self.key_file = make_ca_and_server_cert(workdir / "tls", self.host)
        self.passwd_path = workdir / "passwd"
        self.acl_path = workdir / "acl"
        tool = find_mosquitto_passwd()
        if tool is None:
            raise RuntimeError("mosquitto_passwd is not installed (it comes with the mosquitto package)")
        self.passwd_path.write_text("", encoding="utf-8")
        for user, password in users.items():
            # -b takes the password as an argument: fine for a test's throw-away secret
            subprocess.run([tool, "-b", str(self.passwd_path), user, password], check=True, capture_output=True)
        self.passwd_path.chmod(0o600)
        self.acl_path.write_text("".join(f"user {u}\n" + "".join(f"{line}\n" for line in lines)
                                         for u, lines in acl.items()), encoding="utf-8")
        self.acl_path.chmod(0o600)

    @property
    def url(self) -> str:
        return f"mqtts://{self.host}:{self.port}"

    def config(self) -> str:
        base = [line for line in super().config().splitlines()
                if not line.startswith(("allow_anonymous", "listener"))]
        return "\n".join([
            f"listener {self.port} {self.host}",
            f"cafile {self.ca_file}",
            f"certfile {self.cert_file}",
            f"keyfile {self.key_file}",
            "tls_version tlsv1.2",
            "allow_anonymous false",
            f"password_file {self.passwd_path}",
            f"acl_file {self.acl_path}",
            *base,
        ]) + "\n"
