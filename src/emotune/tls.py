"""A self-signed certificate for HTTPS on a LAN (`emotune serve --https`, `emotune ui --https`).

Browsers give a page the camera only on localhost or over HTTPS. The certificate names localhost, this
machine's host name and its addresses (loopback, the LAN address, the address the server binds), so a phone
or another computer on the network can open the page after accepting it once. It lives in the user's
configuration folder (not the repository), is made once and reused while it still names every address asked
for and has more than a month to run; the key is readable by its owner only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import socket
from pathlib import Path

CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
VALID_DAYS = 365
RENEW_DAYS = 30  # a certificate closer than this to its end is replaced
WILDCARD_HOSTS = ("", "0.0.0.0", "::")


def tls_dir() -> Path:
    """$XDG_CONFIG_HOME/emotune/tls, or ~/.config/emotune/tls."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "emotune" / "tls"


def lan_address() -> str | None:
    """The address this machine reaches the network from (no packet is sent: a UDP socket only picks the
    route), or None without a network."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed anywhere, only used to choose a route
            return str(s.getsockname()[0])
        except OSError:
            return None


def local_names(host: str | None = None) -> list[str]:
    """The names and addresses the certificate covers: localhost, the loopback addresses, the host name, the
    LAN address and `host` (the address the server binds, unless it is a wildcard)."""
    names = ["localhost", "127.0.0.1", "::1", socket.gethostname(), socket.getfqdn(), lan_address()]
    if host and host not in WILDCARD_HOSTS:
        names.append(host)
    return list(dict.fromkeys(n for n in names if n))  # in order, without repeats


def _general_name(name: str):  # -> x509.GeneralName
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def certificate_names(cert_path: Path | str) -> set[str]:
    """The DNS names and IP addresses in a certificate's subjectAltName."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san.get_values_for_type(x509.DNSName)) | {
        str(a) for a in san.get_values_for_type(x509.IPAddress)
    }


def _still_good(cert_path: Path, names: list[str]) -> bool:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        covered = certificate_names(cert_path)
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    left = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    wanted = {str(ipaddress.ip_address(n)) if _is_ip(n) else n for n in names}
    return wanted <= covered and left > dt.timedelta(days=RENEW_DAYS)


def _is_ip(name: str) -> bool:
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(name)
        return True
    return False


def self_signed_certificate(names: list[str], folder: Path | str | None = None) -> tuple[Path, Path, bool]:
    """(certificate, key, made now): the certificate in `folder` (default `tls_dir()`) when it names every
    one of `names` and has more than RENEW_DAYS to run, else a new one (an EC P-256 key) naming them."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = Path(folder) if folder is not None else tls_dir()
    cert_path, key_path = folder / CERT_FILE, folder / KEY_FILE
    if key_path.is_file() and _still_good(cert_path, names):
        return cert_path, key_path, False
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"emotune on {socket.gethostname()}")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # The key is created with mode 0600, never readable by others even for a moment; then the certificate.
    tmp = key_path.with_name(f".{KEY_FILE}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    os.replace(tmp, key_path)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path, True
