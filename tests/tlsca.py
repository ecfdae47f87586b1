"""A certificate authority made in the test, with the openssl command line (no test keys in git)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


class TestCA:
    """A throwaway CA in ``folder`` that issues server certificates for loopback names."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, folder: Path, name: str = "talos-test-ca") -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.cert = folder / f"{name}.pem"
        self.key = folder / f"{name}.key"
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-days", "2", "-subj", f"/CN={name}", "-keyout", str(self.key), "-out", str(self.cert),
            cwd=folder,
        )  # fmt: skip

    def issue(self, name: str, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> Issued:
        key = self.folder / f"{name}.key"
        csr = self.folder / f"{name}.csr"
        cert = self.folder / f"{name}.pem"
        ext = self.folder / f"{name}.ext"
        names = ",".join(f"IP:{h}" if h[0].isdigit() else f"DNS:{h}" for h in hosts)
        ext.write_text(f"subjectAltName={names}\nextendedKeyUsage=serverAuth\n")
        _openssl(
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(csr), cwd=self.folder,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
            "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert), cwd=self.folder,
        )  # fmt: skip
        return Issued(cert, key)
