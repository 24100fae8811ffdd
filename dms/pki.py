"""The daaas PKI: one certificate authority, certificates for services, hosts and users, revocation.

Every TLS endpoint of daaas (source, DMTS, DMS API) trusts this CA and checks its CRL. The CA lives
in one directory:

    ca.pem        the CA certificate
    ca.key        its private key (mode 0600)
    crl.pem       the certificate revocation list, regenerated on every revocation
    index.json    every issued certificate: serial, name, role, validity, revocation time
    certs/        issued certificates and keys (`<name>.pem`, `<name>.key`), unless `out_dir` says otherwise

Keys are ECDSA P-256: quick to generate (tests make dozens) and understood by OpenSSL, nginx, davix
and gfal2. The role decides the key usages: a service or a host may be a TLS server and a client
(it pulls from other services); a user is a client only.
"""
from __future__ import annotations

import datetime as _dt
import ipaddress
import json
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROLES = ("service", "host", "user")
CA_CERT = "ca.pem"
CA_KEY = "ca.key"
CRL = "crl.pem"
INDEX = "index.json"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class PkiError(Exception):
    """Bad input to the PKI (a name, a role, a directory, dates): the message names it and the reason."""


@dataclass(frozen=True)
class Issued:
    """Where an issued certificate and its key were written, and its serial number."""

    cert: Path
    key: Path
    serial: int


def ca_cert_path(ca_dir: Path) -> Path:
    return Path(ca_dir) / CA_CERT


def crl_path(ca_dir: Path) -> Path:
    return Path(ca_dir) / CRL


def _now() -> datetime:
    return datetime.now(_dt.UTC)


def _write_private(path: Path, data: bytes) -> None:
    """Write a key readable only by its owner, never briefly world-readable."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _load_ca(ca_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_dir = Path(ca_dir)
    cert_file, key_file = ca_dir / CA_CERT, ca_dir / CA_KEY
    if not cert_file.is_file() or not key_file.is_file():
        raise PkiError(f"{ca_dir}: no CA here (missing {CA_CERT} or {CA_KEY}); run `daaas pki init --dir {ca_dir}`")
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except ValueError as e:
        raise PkiError(f"{ca_dir}: unreadable CA certificate or key: {e}") from None
    return cert, key  # type: ignore[return-value]


def _read_index(ca_dir: Path) -> list[dict]:
    path = Path(ca_dir) / INDEX
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise PkiError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, list):
        raise PkiError(f"{path}: expected a JSON list of certificates")
    return data


def _write_index(ca_dir: Path, entries: list[dict]) -> None:
    path = Path(ca_dir) / INDEX
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(entries, indent=2) + "\n")
    os.replace(tmp, path)


def list_issued(ca_dir: Path) -> list[dict]:
    """Every certificate the CA issued: serial, name, role, not_before, not_after, revoked (ISO time or None)."""
    _load_ca(ca_dir)
    return _read_index(ca_dir)


def init_ca(ca_dir: Path, *, common_name: str = "daaas CA", days: int = 3650) -> Path:
    """Create a CA in `ca_dir` (made if missing) and return the CA certificate's path.

    Refuses to overwrite an existing CA: its certificates would all stop verifying.
    """
    ca_dir = Path(ca_dir)
    if (ca_dir / CA_CERT).exists() or (ca_dir / CA_KEY).exists():
        raise PkiError(f"{ca_dir}: a CA already exists here ({CA_CERT}); refusing to overwrite it")
    if days < 1:
        raise PkiError(f"days: must be at least 1, got {days}")
    if not common_name.strip():
        raise PkiError("common_name: must not be empty")
    ca_dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "daaas"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(ca_dir / CA_KEY, _key_pem(key))
    (ca_dir / CA_CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_index(ca_dir, [])
    _write_crl(ca_dir, cert, key, [])
    return ca_dir / CA_CERT


def _write_crl(ca_dir: Path, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
               entries: list[dict]) -> None:
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - _dt.timedelta(minutes=5))
        # OpenSSL rejects every certificate once the CRL is past next_update: tie it to the CA's life.
        .next_update(max(ca_cert.not_valid_after_utc, now + _dt.timedelta(days=1)))
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(x509.CRLNumber(int(now.timestamp() * 1000)), critical=False)
    )
    for e in entries:
        if e.get("revoked"):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(int(e["serial"]))
                .revocation_date(datetime.fromisoformat(e["revoked"]))
                .build())
    crl = builder.sign(ca_key, hashes.SHA256())
    path = Path(ca_dir) / CRL
    tmp = path.with_suffix(".pem.tmp")
    tmp.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp, path)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise PkiError(f"name {name!r}: must be 1-64 characters of letters, digits, '.', '_', '@', '-', "
                       "starting with a letter or digit")


def issue(ca_dir: Path, name: str, *, role: str, out_dir: Path | None = None, days: int = 825,
          not_before: datetime | None = None, not_after: datetime | None = None,
          dns_names: Sequence[str] = ("localhost",),
          ip_addresses: Sequence[str] = ("127.0.0.1",)) -> Issued:
    """Issue a certificate for `name` (its subject CN; the role is its OU) signed by the CA in `ca_dir`.

    `not_before`/`not_after` override `days` (tests use them for expired and not-yet-valid
    certificates). The certificate and key go to `out_dir` (default `ca_dir/certs`) as
    `<name>.pem` and `<name>.key` (0600).
    """
    _check_name(name)
    if role not in ROLES:
        raise PkiError(f"role {role!r}: must be one of {', '.join(ROLES)}")
    if days < 1:
        raise PkiError(f"days: must be at least 1, got {days}")
    ca_cert, ca_key = _load_ca(ca_dir)
    now = _now()
    nb = not_before or (now - _dt.timedelta(minutes=5))
    na = not_after or (now + _dt.timedelta(days=days))
    if nb.tzinfo is None or na.tzinfo is None:
        raise PkiError("not_before/not_after: must be timezone-aware datetimes")
    if na <= nb:
        raise PkiError(f"not_after ({na.isoformat()}) must be later than not_before ({nb.isoformat()})")
    sans: list[x509.GeneralName] = []
    for d in dns_names:
        if not d or not re.match(r"^[A-Za-z0-9*][A-Za-z0-9.-]*$", d):
            raise PkiError(f"dns_names: {d!r} is not a DNS name")
        sans.append(x509.DNSName(d))
    for ip in ip_addresses:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(ip)))
        except ValueError:
            raise PkiError(f"ip_addresses: {ip!r} is not an IP address") from None
    key = ec.generate_private_key(ec.SECP256R1())
    serial = x509.random_serial_number()
    eku = [ExtendedKeyUsageOID.CLIENT_AUTH] if role == "user" else \
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "daaas"),
                                 x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                                 x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(nb)
        .not_valid_after(na)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=True, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    out = Path(out_dir) if out_dir is not None else Path(ca_dir) / "certs"
    out.mkdir(parents=True, exist_ok=True)
    key_file, cert_file = out / f"{name}.key", out / f"{name}.pem"
    _write_private(key_file, _key_pem(key))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    entries = _read_index(ca_dir)
    entries.append({"serial": serial, "name": name, "role": role, "not_before": nb.isoformat(),
                    "not_after": na.isoformat(), "cert": str(cert_file), "revoked": None})
    _write_index(ca_dir, entries)
    return Issued(cert=cert_file, key=key_file, serial=serial)


def revoke(ca_dir: Path, name_or_serial: str | int) -> None:
    """Revoke every unrevoked certificate with this name (or the one with this serial); regenerate the CRL."""
    ca_cert, ca_key = _load_ca(ca_dir)
    entries = _read_index(ca_dir)
    serial: int | None = None
    if isinstance(name_or_serial, int):
        serial = name_or_serial
    elif isinstance(name_or_serial, str) and name_or_serial.isdigit():
        serial = int(name_or_serial)
    hits = [e for e in entries if (serial is not None and int(e["serial"]) == serial)
            or e["name"] == str(name_or_serial)]
    if not hits:
        raise PkiError(f"{name_or_serial!r}: no certificate with this name or serial in {Path(ca_dir) / INDEX}")
    now = _now().isoformat()
    for e in hits:
        if not e.get("revoked"):
            e["revoked"] = now
    _write_index(ca_dir, entries)
    _write_crl(ca_dir, ca_cert, ca_key, entries)


def subject_hash(cert_file: Path) -> str:
    """OpenSSL's subject hash of a certificate (the `<hash>.0` name in a CA directory)."""
    openssl = shutil.which("openssl")
    if not openssl:
        raise PkiError("openssl: not found; it is needed to build a hashed CA directory")
    out = subprocess.run([openssl, "x509", "-noout", "-subject_hash", "-in", str(cert_file)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise PkiError(f"{cert_file}: openssl could not read it: {out.stderr.strip()}")
    return out.stdout.strip()


def hashed_ca_dir(ca_dir: Path, out_dir: Path | None = None) -> Path:
    """A CA directory in OpenSSL's hashed layout (`<hash>.0`, `<hash>.r0` for the CRL).

    davix and gfal2 accept the trusted CAs only in this form (`--capath`, X509_CERT_DIR).
    """
    out = Path(out_dir) if out_dir is not None else Path(ca_dir) / "capath"
    out.mkdir(parents=True, exist_ok=True)
    h = subject_hash(ca_cert_path(ca_dir))
    shutil.copyfile(ca_cert_path(ca_dir), out / f"{h}.0")
    shutil.copyfile(crl_path(ca_dir), out / f"{h}.r0")
    return out
