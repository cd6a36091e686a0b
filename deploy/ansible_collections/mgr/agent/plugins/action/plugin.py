# -*- coding: utf-8 -*-
# Copyright: mgr-agent contributors
# MIT License (see pyproject.toml)
"""Action plugin of mgr.agent.plugin: a package on the controller is copied to the host.

With ``src`` a controller path (the default): the file is looked up like
``ansible.builtin.copy`` does (the role's or play's ``files/``), its SHA-256 computed, and
the host's copy in ``cache_dir`` used when it has the same digest; only when it
differs is the file transferred (``ansible.builtin.copy``). The module first runs on the
host's copy with ``sha256`` set: the agent refuses (before changing anything) a copy that is
missing or differs, and only then is the file transferred and the module run again. So a
no-op costs one round trip. In check mode nothing is
written outside Ansible's temporary directory. A URL, ``remote_src: true`` and the other
states go to the module unchanged.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

MODULE = "mgr.agent.plugin"
CACHE_REL = "var/cache/mgr-agent/packages"
MISSING = ("not-found", "checksum-mismatch")   # the host's copy is not there, or not this package


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


class ActionModule(ActionBase):
    TRANSFERS_FILES = True

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        args = dict(self._task.args)
        src = args.get("src")
        if (not src or args.get("state", "present") != "present" or args.get("remote_src")
                or "://" in src):
            result.update(self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars))
            return result
        owns_tmp = self._connection._shell.tmpdir is None
        try:
            result.update(self._from_controller(args, src, task_vars))
        finally:
            if owns_tmp and self._connection._shell.tmpdir is not None:
                self._remove_tmp_path(self._connection._shell.tmpdir)
        return result

    def _fail(self, msg, **extra):
        return dict(failed=True, changed=False, msg=msg, rolled_back=False, **extra)

    def _from_controller(self, args, src, task_vars):
        try:
            local = self._find_needle("files", src)
        except AnsibleError as exc:
            return self._fail(to_text(exc))
        if os.path.isdir(local):
            return self._fail("src %s is a directory on the controller: pack it (zip, tar) or copy it "
                              "and use remote_src: true" % src)
        digest = sha256_file(local)
        wanted = (args.get("sha256") or "").lower()
        if wanted and wanted != digest:
            return self._fail("%s: sha256 is %s, expected %s; nothing was copied" % (src, digest, wanted),
                              rc=12, error={"code": "checksum-mismatch"})
        root = args.get("root") or "/"
        cache_dir = args.get("cache_dir") or os.path.join(root, CACHE_REL)
        dest = os.path.join(cache_dir, os.path.basename(local))
        # the common case first: the host has the package already; the agent itself refuses
        # (before changing anything) when the copy is missing or differs
        module_args = dict(args, src=dest, remote_src=True, sha256=digest)
        out = self._execute_module(module_name=MODULE, module_args=module_args, task_vars=task_vars)
        if not (out.get("failed") and (out.get("error") or {}).get("code") in MISSING):
            out["package"] = {"src": src, "dest": dest, "sha256": digest, "copied": False}
            return out
        if self._connection._shell.tmpdir is None:
            self._make_tmp_path()
        tmp_src = self._connection._shell.join_path(self._connection._shell.tmpdir, os.path.basename(local))
        self._transfer_file(local, tmp_src)
        self._fixup_perms2((self._connection._shell.tmpdir, tmp_src))
        copied = False
        target = tmp_src     # check mode: Ansible's temporary directory, removed afterwards
        if not self._task.check_mode:
            made = self._execute_module(module_name="ansible.legacy.file", task_vars=task_vars,
                                        module_args=dict(path=cache_dir, state="directory", mode="0700"))
            if made.get("failed"):
                return made
            copy = self._execute_module(module_name="ansible.legacy.copy", task_vars=task_vars,
                                        module_args=dict(src=tmp_src, dest=dest, mode="0600",
                                                         _original_basename=os.path.basename(local)))
            if copy.get("failed"):
                return copy
            copied, target = True, dest
        module_args = dict(args, src=target, remote_src=True, sha256=digest)
        out = self._execute_module(module_name=MODULE, module_args=module_args, task_vars=task_vars)
        out["package"] = {"src": src, "dest": dest, "sha256": digest, "copied": copied}
        if copied and not out.get("failed"):
            out["changed"] = True
        return out
