"""A private Postfix instance on loopback, for tests (real DSNs) and benchmarks (a peer to compare with).

Its own config, queue and log live under one directory; it listens on one
loopback port, relays anything from loopback and routes by a transport table
(``{"example.net": "127.0.0.1:2525"}``). Needs root and the Debian postfix
package (``make test`` installs it unconfigured, so no system instance runs).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

POSTFIX = "/usr/sbin/postfix"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostfixInstance:
    def __init__(
        self, transports: dict[str, str], port: int | None = None, extra: dict[str, str] | None = None
    ) -> None:
        # Postfix's daemons run as the postfix user: the directory must be reachable by it (pytest's are 0700).
        self.base = Path(tempfile.mkdtemp(prefix="relay-postfix-"))
        self.base.chmod(0o755)
        self.port = port or free_port()
        self.conf = self.base / "conf"
        self.log_path = self.base / "maillog"
        self.transports = transports
        self.extra = extra or {}

    def _main_cf(self) -> str:
        table = ", ".join(
            f"{domain}=smtp:[{hp.rsplit(':', 1)[0]}]:{hp.rsplit(':', 1)[1]}" for domain, hp in self.transports.items()
        )
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.base / "spool"),
            "data_directory": str(self.base / "data"),
            "myhostname": "mx.postfix.test",
            "mydestination": "",
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "transport_maps": f"inline:{{ {table} }}",
            "smtp_tls_security_level": "none",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "maillog_file": str(self.log_path),
            "maillog_file_prefixes": str(self.base),
            "smtputf8_enable": "no",
            **self.extra,
        }
        return "".join(f"{k} = {v}\n" for k, v in settings.items())

    def _master_cf(self) -> str:
        """Debian's master.cf with the smtpd on our port only and no chroot (nothing to copy into it)."""
        out = []
        for line in Path("/etc/postfix/master.cf").read_text().splitlines():
            fields = line.split()
            if line.startswith(("#", " ", "\t")) or len(fields) < 8:
                out.append(line)
                continue
            if fields[1] == "inet":
                if fields[0] != "smtp":
                    continue
                fields[0] = f"127.0.0.1:{self.port}"
            fields[4] = "n"
            out.append(" ".join(fields))
        return "\n".join(out) + "\n"

    def start(self, timeout: float = 15.0) -> None:
        if not Path(POSTFIX).exists():
            raise RuntimeError("postfix is not installed: run the README's set-up (make test installs it)")
        self.conf.mkdir()
        (self.base / "spool").mkdir()
        (self.base / "data").mkdir()
        shutil.chown(self.base / "data", "postfix")
        (self.conf / "main.cf").write_text(self._main_cf())
        (self.conf / "master.cf").write_text(self._master_cf())
        subprocess.run([POSTFIX, "-c", str(self.conf), "start"], check=True, capture_output=True, timeout=timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(512).startswith(b"220"):
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"postfix did not greet on port {self.port}:\n{self.log()}")

    def stop(self) -> None:
        subprocess.run([POSTFIX, "-c", str(self.conf), "stop"], capture_output=True, timeout=30)
        shutil.rmtree(self.base, ignore_errors=True)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
