"""Our own sshd on 127.0.0.1 and a free port, for the Ansible tests and the sizing bench:
a throwaway host key and client key, root logs in with the key only (TESTING.md)."""

from __future__ import annotations

import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.waits import wait_for_file


@dataclass
class Sshd:
    port: int
    key: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def inventory_fields(self) -> list[str]:
        """Inventory variables of a host reached through this sshd."""
        return ["ansible_connection=ssh", "ansible_host=127.0.0.1", "ansible_user=root",
                f"ansible_port={self.port}", f"ansible_ssh_private_key_file={self.key}",
                "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'"]


def why_not() -> str | None:
    if shutil.which("sshd") is None and not Path("/usr/sbin/sshd").exists():
        return "openssh-server is not installed (make deps installs it)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(work: Path, timeout: float = 20) -> Sshd:
    """Start sshd in ``work``; returns once it logged that it listens."""
    binary = shutil.which("sshd") or "/usr/sbin/sshd"
    work.mkdir(parents=True, exist_ok=True)
    key = work / "id_ed25519"
    for path in (key, work / "host_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    shutil.copy(f"{key}.pub", work / "authorized_keys")
    port = free_port()
    config = work / "sshd_config"
    config.write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {work}/host_key
AuthorizedKeysFile {work}/authorized_keys
PidFile {work}/sshd.pid
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
StrictModes no
Subsystem sftp internal-sftp
LogLevel VERBOSE
""")
    Path("/run/sshd").mkdir(exist_ok=True)
    log = work / "sshd.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([binary, "-D", "-e", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT)
    try:                                                 # its own line says it is ready
        wait_for_file(log, lambda text: b"Server listening" in text, what="sshd to listen",
                      timeout=timeout, alive=lambda: proc.poll() is None)
    except AssertionError as exc:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"sshd did not start ({exc}): {log.read_text()}") from None
    return Sshd(port, key, proc, log)
