#!/bin/sh
# Remove mgr-agent from this machine: stop and disable its units, remove them, the venv,
# the command link, the sysusers/tmpfiles snippets and the mgr-agent group. The state
# (/var/lib/mgr-agent: history, kept versions, journals), the configuration
# (/etc/mgr-agent) and every installed plugin stay, unless --purge-state. The panels are
# never stopped: their cores run outside mgr-agent.service (docs/daemon.md).
#
#   deploy/uninstall.sh [--purge-state] [--prefix /opt/mgr-agent] [--unit-dir /etc/systemd/system]
#
# --purge-state  also remove /var/lib/mgr-agent and /etc/mgr-agent (installed plugins stay
#                on disk, but the agent forgets them: no rollback, no uninstall through it)
# Exit 0 when the agent is gone (also when it was not installed), 1 on an error.
set -eu

PREFIX=/opt/mgr-agent
UNIT_DIR=/etc/systemd/system
PURGE=no

while [ $# -gt 0 ]; do
    case "$1" in
        --purge-state) PURGE=yes; shift ;;
        --prefix) PREFIX=$2; shift 2 ;;
        --unit-dir) UNIT_DIR=$2; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "uninstall.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

say() { echo "mgr-agent uninstall: $*"; }

[ "$(id -u)" = 0 ] || { echo "uninstall.sh: must run as root" >&2; exit 1; }
UNITS="mgr-agent.service mgr-agent.socket"
STATE=/var/lib/mgr-agent

# A core that an older agent started from inside the service lives in its cgroup and
# would be killed with it: move such processes into a scope of their own first.
adopt_strays() {
    cg=$(systemctl show -p ControlGroup --value mgr-agent.service 2>/dev/null || true)
    main=$(systemctl show -p MainPID --value mgr-agent.service 2>/dev/null || echo 0)
    [ -n "$cg" ] && [ -r "/sys/fs/cgroup$cg/cgroup.procs" ] || return 0
    for pid in $(cat "/sys/fs/cgroup$cg/cgroup.procs"); do
        [ "$pid" = "$main" ] && continue
        [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = core ] || continue
        busctl call org.freedesktop.systemd1 /org/freedesktop/systemd1 \
            org.freedesktop.systemd1.Manager StartTransientUnit 'ssa(sv)a(sa(sv))' \
            "mgr-agent-adopted-core-$pid.scope" fail 1 PIDs au 1 "$pid" 0 >/dev/null &&
            say "moved the panel core (pid $pid) out of mgr-agent.service"
    done
}

# 1. the units
if [ -d /run/systemd/system ]; then
    adopt_strays
    for unit in $UNITS; do
        if systemctl cat "$unit" >/dev/null 2>&1; then
            systemctl disable --now --quiet "$unit" 2>/dev/null || systemctl stop "$unit" || true
            say "stopped and disabled $unit"
        fi
    done
else
    for unit in $UNITS; do
        systemctl disable --quiet "$unit" 2>/dev/null || true
    done
fi
for unit in $UNITS; do
    if [ -e "$UNIT_DIR/$unit" ]; then
        rm -f "$UNIT_DIR/$unit"
        say "removed $UNIT_DIR/$unit"
    fi
done
if [ "$PURGE" = yes ] && [ -d "$UNIT_DIR/mgr-agent.service.d" ]; then
    rm -rf "$UNIT_DIR/mgr-agent.service.d"
    say "removed the drop-ins $UNIT_DIR/mgr-agent.service.d"
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl reset-failed mgr-agent.service mgr-agent.socket 2>/dev/null || true
fi

# 2. the command and the venv (the prefix is a link to a venv under PREFIX.venvs, or a
# venv itself when an older install.sh made it)
if [ -L /usr/local/bin/mgr-agent ] && \
        [ "$(readlink /usr/local/bin/mgr-agent)" = "$PREFIX/bin/mgr-agent" ]; then
    rm -f /usr/local/bin/mgr-agent
    say "removed /usr/local/bin/mgr-agent"
fi
if [ -L "$PREFIX" ] || [ -e "$PREFIX" ]; then
    rm -rf "$PREFIX"
    say "removed $PREFIX"
fi
if [ -e "$PREFIX.venvs" ]; then
    rm -rf "$PREFIX.venvs"
    say "removed $PREFIX.venvs"
fi

# 3. the runtime directory, the snippets, the group
rm -rf /run/mgr-agent
for snippet in /usr/lib/sysusers.d/mgr-agent.conf /usr/lib/tmpfiles.d/mgr-agent.conf; do
    if [ -e "$snippet" ]; then
        rm -f "$snippet"
        say "removed $snippet"
    fi
done
if [ -d "$STATE" ] && [ "$PURGE" = no ]; then
    # no group may inherit read access to the kept state through a reused gid
    chgrp root "$STATE"
    chmod 0700 "$STATE"
fi
if getent group mgr-agent >/dev/null 2>&1; then
    if groupdel mgr-agent 2>/dev/null; then
        say "removed the group mgr-agent"
    else
        say "could not remove the group mgr-agent (the primary group of a user?); left in place" >&2
    fi
fi

# 4. the state, only when asked
if [ "$PURGE" = yes ]; then
    rm -rf "$STATE" /etc/mgr-agent
    say "removed $STATE and /etc/mgr-agent (installed plugins stay on disk)"
elif [ -d "$STATE" ]; then
    say "kept $STATE (history, kept versions) and /etc/mgr-agent; --purge-state removes them"
fi
say "done"
