"""A throw-away certificate authority for the TLS tests, made with the `openssl` command line.

`make_tls_files(folder)` writes a CA, a server certificate for 127.0.0.1 / localhost (both in the
subjectAltName, as a client checking the host name needs), a client certificate for mutual TLS, and a
second, unrelated CA with its own client certificate: what a server must refuse and a client must not
trust. Keys are P-256 (fast to make; Go's and OpenSSL's TLS both take them). Certificates last two days.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

SERVER_NAMES = "IP:127.0.0.1,DNS:localhost"
DAYS = "2"


class OpenSSLMissing(RuntimeError):
    """The `openssl` command is needed to make the test certificates."""


def openssl_binary() -> str:
    found = shutil.which("openssl")
    if found is None:
        raise OpenSSLMissing("the TLS tests need the openssl command line (apt-get install openssl)")
    return found


def _openssl(*args: str | Path, cwd: Path) -> None:
    result = subprocess.run(
        [openssl_binary(), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(map(str, args))} failed ({result.returncode}):\n{result.stderr}")


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class TlsFiles:
    ca: KeyPair
    server: KeyPair
    client: KeyPair
    other_ca: KeyPair  # trusted by nobody
    stranger: KeyPair  # a client certificate issued by other_ca

    @property
    def ca_cert(self) -> Path:
        return self.ca.cert


def _new_key(path: Path, cwd: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path, cwd=cwd)
    path.chmod(0o600)


def make_ca(folder: Path, name: str) -> KeyPair:
    ca = KeyPair(folder / f"{name}.crt", folder / f"{name}.key")
    _new_key(ca.key, folder)
    _openssl(
        "req", "-x509", "-new", "-key", ca.key, "-out", ca.cert, "-days", DAYS, "-subj", f"/CN=tradecache tests {name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
        cwd=folder,
    )  # fmt: skip
    return ca


def issue(folder: Path, ca: KeyPair, name: str, usage: Literal["server", "client"]) -> KeyPair:
    """A leaf certificate signed by `ca`: for a server (with the SAN) or for a client."""
    leaf = KeyPair(folder / f"{name}.crt", folder / f"{name}.key")
    _new_key(leaf.key, folder)
    request = folder / f"{name}.csr"
    _openssl("req", "-new", "-key", leaf.key, "-out", request, "-subj", f"/CN={name}", cwd=folder)
    extensions = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={'serverAuth' if usage == 'server' else 'clientAuth'}",
        "subjectKeyIdentifier=hash",
        "authorityKeyIdentifier=keyid,issuer",
    ]
    if usage == "server":
        extensions.append(f"subjectAltName={SERVER_NAMES}")
    extension_file = folder / f"{name}.ext"
    extension_file.write_text("\n".join(extensions) + "\n")
    _openssl(
        "x509", "-req", "-in", request, "-CA", ca.cert, "-CAkey", ca.key, "-CAcreateserial", "-out", leaf.cert,
        "-days", DAYS, "-sha256", "-extfile", extension_file,
        cwd=folder,
    )  # fmt: skip
    return leaf


def make_tls_files(folder: Path) -> TlsFiles:
    folder.mkdir(parents=True, exist_ok=True)
    ca = make_ca(folder, "ca")
    other_ca = make_ca(folder, "other-ca")
    return TlsFiles(
        ca=ca,
        server=issue(folder, ca, "server", "server"),
        client=issue(folder, ca, "client", "client"),
        other_ca=other_ca,
        stranger=issue(folder, other_ca, "stranger", "client"),
    )


__all__ = ["KeyPair", "OpenSSLMissing", "TlsFiles", "issue", "make_ca", "make_tls_files", "openssl_binary"]
