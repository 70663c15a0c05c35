"""TLS contexts for relay's listeners: TLS 1.2 and newer only."""

from __future__ import annotations

import datetime
import os
import ssl
from pathlib import Path


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


def self_signed(hostname: str, days: int = 3650, now: float | None = None) -> tuple[bytes, bytes]:
    """A self-signed certificate and its private key (PEM) for ``hostname``, valid from ``now`` (a
    clock's seconds since the epoch; the system clock's by default) for ``days``."""
    # Imported here: only the first start without [smtp] tls_cert makes a certificate (x509 is ~2 MB a process).
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    start = datetime.datetime.now(datetime.UTC) if now is None else datetime.datetime.fromtimestamp(now, datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - datetime.timedelta(minutes=5))
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def write_self_signed(cert_path: Path, key_path: Path, hostname: str) -> None:
    """Write a new self-signed pair; the key file is created 0600.

    Each file is written under a temporary name and renamed into place, so a
    reader never sees half a file.
    """
    cert_pem, key_pem = self_signed(hostname)
    key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    for path, data, mode in ((key_path, key_pem, 0o600), (cert_path, cert_pem, 0o644)):
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(partial, path)
