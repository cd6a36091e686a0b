#!/bin/sh
# Install (or upgrade) mgr-agent on this machine: a venv in /opt/mgr-agent, the systemd
# units, the mgr-agent group, the runtime/state directories; enable the socket and the
# service. Idempotent: running it again changes nothing but the agent's version.
#
#   deploy/install.sh [--src CHECKOUT|WHEEL] [--find-links DIR] [--no-index]
#                     [--prefix /opt/mgr-agent] [--unit-dir /etc/systemd/system]
#                     [--no-systemd-python] [--no-start]
#
# --src         a source checkout (default: the one this script is in) or a built wheel
# --find-links  a directory of wheels (a wheelhouse) to install from; with --no-index,
#               nothing is fetched from the network (PyPI is the only index used otherwise)
# --no-start    enable the units but do not (re)start them (also automatic when systemd
#               is not running, e.g. while building an image)
set -eu

PREFIX=/opt/mgr-agent
UNIT_DIR=/etc/systemd/system
SRC=$(cd "$(dirname "$0")/.." && pwd)
FIND_LINKS=""
NO_INDEX=""
EXTRAS="[systemd]"
START=yes

while [ $# -gt 0 ]; do
    case "$1" in
        --src) SRC=$2; shift 2 ;;
        --find-links) FIND_LINKS=$2; shift 2 ;;
        --no-index) NO_INDEX=--no-index; shift ;;
        --prefix) PREFIX=$2; shift 2 ;;
        --unit-dir) UNIT_DIR=$2; shift 2 ;;
        --no-systemd-python) EXTRAS=""; shift ;;
        --no-start) START=no; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

say() { echo "mgr-agent install: $*"; }

[ "$(id -u)" = 0 ] || { echo "install.sh: must run as root" >&2; exit 1; }
UNITS=$(cd "$(dirname "$0")/../units" && pwd)
PY=${PYTHON:-python3}

# 1. the venv (created once; kept across upgrades)
if [ ! -x "$PREFIX/bin/python" ] || ! "$PREFIX/bin/python" -c 'import sys' 2>/dev/null; then
    say "creating the venv $PREFIX"
    "$PY" -m venv "$PREFIX"
fi

# 2. the agent and its dependencies
set --
[ -n "$FIND_LINKS" ] && set -- "$@" --find-links "$FIND_LINKS"
[ -n "$NO_INDEX" ] && set -- "$@" "$NO_INDEX"
case "$SRC" in
    *.whl) TARGET="mgr-agent$EXTRAS @ file://$(cd "$(dirname "$SRC")" && pwd)/$(basename "$SRC")" ;;
    *)
        # a checkout may be read-only: build from a copy
        BUILD=$(mktemp -d)
        trap 'rm -rf "$BUILD"' EXIT
        cp -r "$SRC/agent" "$SRC/pyproject.toml" "$BUILD/"
        [ -f "$SRC/README.md" ] && cp "$SRC/README.md" "$BUILD/"
        rm -rf "$BUILD"/agent/*.egg-info
        TARGET="$BUILD$EXTRAS"
        ;;
esac
say "installing $(basename "$SRC") into $PREFIX"
"$PREFIX/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$@" "$TARGET"
ln -sfn "$PREFIX/bin/mgr-agent" /usr/local/bin/mgr-agent
DOCS=$(cd "$(dirname "$0")/.." && pwd)/docs
if [ -f "$DOCS/daemon.md" ]; then
    install -d -m 0755 "$PREFIX/share/doc/mgr-agent"
    install -m 0644 "$DOCS/daemon.md" "$PREFIX/share/doc/mgr-agent/daemon.md"
fi

# 3. the group, the directories
install -d -m 0755 /usr/lib/sysusers.d /usr/lib/tmpfiles.d
install -m 0644 "$UNITS/mgr-agent.sysusers.conf" /usr/lib/sysusers.d/mgr-agent.conf
install -m 0644 "$UNITS/mgr-agent.tmpfiles.conf" /usr/lib/tmpfiles.d/mgr-agent.conf
if command -v systemd-sysusers >/dev/null 2>&1; then
    systemd-sysusers /usr/lib/sysusers.d/mgr-agent.conf
elif ! getent group mgr-agent >/dev/null; then
    groupadd --system mgr-agent
fi
if command -v systemd-tmpfiles >/dev/null 2>&1; then
    systemd-tmpfiles --create /usr/lib/tmpfiles.d/mgr-agent.conf
else
    install -d -m 0755 /run/mgr-agent /var/lib/mgr-agent /etc/mgr-agent
fi

# 4. the units (ExecStart follows --prefix)
install -d -m 0755 "$UNIT_DIR"
sed "s#/opt/mgr-agent/bin/mgr-agent#$PREFIX/bin/mgr-agent#" "$UNITS/mgr-agent.service" \
    > "$UNIT_DIR/mgr-agent.service.new"
chmod 0644 "$UNIT_DIR/mgr-agent.service.new"
mv "$UNIT_DIR/mgr-agent.service.new" "$UNIT_DIR/mgr-agent.service"
install -m 0644 "$UNITS/mgr-agent.socket" "$UNIT_DIR/mgr-agent.socket"

# 5. enable; start (or restart, to run the new version) when systemd runs
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable --quiet mgr-agent.socket mgr-agent.service
    if [ "$START" = yes ]; then
        systemctl start mgr-agent.socket
        if systemctl is-active --quiet mgr-agent.service; then
            systemctl restart mgr-agent.service
        else
            systemctl start mgr-agent.service
        fi
        say "mgr-agent.service is $(systemctl is-active mgr-agent.service)"
    fi
else
    systemctl enable --quiet mgr-agent.socket mgr-agent.service 2>/dev/null || \
        say "systemd is not running: enable mgr-agent.socket and mgr-agent.service later"
fi
say "done: $("$PREFIX/bin/mgr-agent" --version)"
