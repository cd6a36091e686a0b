# Test-only Ansible connection: run in the namespaces of a container's init (nsenter), copy
# files through /proc/PID/root. Reaches the systemd-nspawn container of the system tests,
# where `machinectl`/`systemd-run -M` do not work (see ../../../../shared/TESTING.md).
from __future__ import annotations

import os
import shutil
import subprocess

from ansible.errors import AnsibleError
from ansible.plugins.connection import ConnectionBase

DOCUMENTATION = """
name: nsenter
short_description: Run tasks inside a container through nsenter (tests only)
description:
  - Commands run with C(nsenter -t PID -a); files are copied through C(/proc/PID/root).
author: mgr-agent contributors
options:
  nsenter_pid:
    description: PID of the container's init, as seen from the host.
    type: int
    vars:
      - name: nsenter_pid
"""

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Connection(ConnectionBase):  # type: ignore[misc]  # ansible has no type stubs: its base is Any
    transport = "nsenter"
    has_pipelining = True

    def _connect(self) -> Connection:
        self._connected = True
        return self

    @property
    def _pid(self) -> int:
        return int(self.get_option("nsenter_pid"))

    def exec_command(self, cmd: str, in_data: bytes | None = None, sudoable: bool = True):  # type: ignore[no-untyped-def]
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        env = {"PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8"}
        proc = subprocess.run(["nsenter", "-t", str(self._pid), "-a", "/bin/sh", "-c", cmd],
                              input=in_data, capture_output=True, env=env, check=False)
        return proc.returncode, proc.stdout, proc.stderr

    def _inside(self, path: str) -> str:
        if not os.path.isabs(path):
            raise AnsibleError(f"nsenter: {path} is not absolute")
        return f"/proc/{self._pid}/root{path}"

    def put_file(self, in_path: str, out_path: str) -> None:
        super().put_file(in_path, out_path)
        shutil.copyfile(in_path, self._inside(out_path))

    def fetch_file(self, in_path: str, out_path: str) -> None:
        super().fetch_file(in_path, out_path)
        shutil.copyfile(self._inside(in_path), out_path)

    def close(self) -> None:
        self._connected = False
