#!/bin/sh
# Install (or upgrade) mgr-agent on this machine: a venv under /opt/mgr-agent.venvs with
# /opt/mgr-agent linked to it, the systemd units, the mgr-agent group, the runtime/state
# directories; enable the socket and the service. Idempotent: running it again changes
# nothing but the agent's version. Works on a plain Debian 12 / Ubuntu root that has only
# python3: python3-venv and python3-systemd are installed with apt when missing.
#
#   deploy/install.sh [--src CHECKOUT|WHEEL] [--find-links DIR] [--no-index]
#                     [--prefix /opt/mgr-agent] [--unit-dir /etc/systemd/system]
#                     [--no-systemd-python] [--no-apt] [--no-start]
#
# --src         a source checkout (default: the one this script is in) or a built wheel
# --find-links  a directory of wheels (a wheelhouse) to install from; with --no-index,
#               nothing is fetched from PyPI (apt may still fetch the two packages above)
# --no-systemd-python  do without python3-systemd (built-in sd_notify, logs on stderr)
# --no-apt      never run apt-get; fail with the list of what is missing instead
# --no-start    enable the units but do not (re)start them (also automatic when systemd
#               is not running, e.g. while building an image)
# A new venv is built beside the current one and switched to only once it works: a failed
# run leaves the previous installation as it was. Removal: deploy/uninstall.sh.
set -eu

PREFIX=/opt/mgr-agent
UNIT_DIR=/etc/systemd/system
SRC=$(cd "$(dirname "$0")/.." && pwd)
FIND_LINKS=""
NO_INDEX=""
SYSTEMD_PY=yes
APT=yes
START=yes

while [ $# -gt 0 ]; do
    case "$1" in
        --src) SRC=$2; shift 2 ;;
        --find-links) FIND_LINKS=$2; shift 2 ;;
        --no-index) NO_INDEX=--no-index; shift ;;
        --prefix) PREFIX=$2; shift 2 ;;
        --unit-dir) UNIT_DIR=$2; shift 2 ;;
        --no-systemd-python) SYSTEMD_PY=no; shift ;;
        --no-apt) APT=no; shift ;;
        --no-start) START=no; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

say() { echo "mgr-agent install: $*"; }
die() { echo "mgr-agent install: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
STARTED=$(date +%s)
UNITS=$(cd "$(dirname "$0")/../units" && pwd)
DOCS=$(cd "$(dirname "$0")/.." && pwd)/docs
PY=${PYTHON:-python3}
VENVS=$PREFIX.venvs
command -v "$PY" >/dev/null 2>&1 || die "$PY is not installed (apt-get install python3)"

# 1. what the distribution provides: venv support (ensurepip) and systemd's bindings
missing=""
"$PY" -c 'import ensurepip' 2>/dev/null || missing=" python3-venv"
if [ "$SYSTEMD_PY" = yes ] && ! "$PY" -c 'import systemd.daemon, systemd.journal' 2>/dev/null; then
    missing="$missing python3-systemd"
fi
if [ -n "$missing" ]; then
    [ "$APT" = yes ] && command -v apt-get >/dev/null 2>&1 || \
        die "missing:$missing (install them, or drop --no-apt)"
    say "apt-get install$missing"
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086
    if ! apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1; then
        apt-get update -qq >/dev/null || die "apt-get update failed"
        # shellcheck disable=SC2086
        apt-get install -y -qq --no-install-recommends $missing >/dev/null || \
            die "apt-get install$missing failed"
    fi
fi

# 2. a new venv beside the current one; the current one is not touched until the switch
install -d -m 0755 "$VENVS"
NEW=$(mktemp -d "$VENVS/$(date +%Y%m%d%H%M%S)-XXXX")
chmod 0755 "$NEW"
BUILD=""
cleanup() {
    [ -n "$BUILD" ] && rm -rf "$BUILD"
    if [ -n "$NEW" ]; then
        rm -rf "$NEW"
        echo "mgr-agent install: failed; the previous installation (if any) is unchanged" >&2
    fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
say "building a venv in $NEW"
"$PY" -m venv "$NEW"
if [ "$SYSTEMD_PY" = yes ]; then
    # only the systemd package is shared with the system, not its other site-packages
    site=$("$NEW/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')
    pkg=$("$PY" -c 'import os, systemd; print(os.path.dirname(systemd.__file__))')
    ln -s "$pkg" "$site/systemd"
fi
set --
[ -n "$FIND_LINKS" ] && set -- "$@" --find-links "$FIND_LINKS"
[ -n "$NO_INDEX" ] && set -- "$@" "$NO_INDEX"
case "$SRC" in
    *.whl) TARGET="mgr-agent @ file://$(cd "$(dirname "$SRC")" && pwd)/$(basename "$SRC")" ;;
    *)
        # a checkout may be read-only: build from a copy
        BUILD=$(mktemp -d)
        cp -r "$SRC/agent" "$SRC/pyproject.toml" "$BUILD/"
        [ -f "$SRC/README.md" ] && cp "$SRC/README.md" "$BUILD/"
        rm -rf "$BUILD"/agent/*.egg-info
        TARGET="$BUILD"
        ;;
esac
say "installing $(basename "$SRC")"
"$NEW/bin/python" -m pip install --quiet --disable-pip-version-check "$@" "$TARGET"
"$NEW/bin/mgr-agent" --version >/dev/null
if [ "$SYSTEMD_PY" = yes ]; then
    "$NEW/bin/python" -c 'import systemd.daemon, systemd.journal, mgr_agent.daemon'
fi
if [ -f "$DOCS/daemon.md" ]; then
    install -d -m 0755 "$NEW/share/doc/mgr-agent"
    install -m 0644 "$DOCS/daemon.md" "$NEW/share/doc/mgr-agent/daemon.md"
fi

# 3. the switch: PREFIX becomes a link to the new venv in one rename
OLD=""
if [ -L "$PREFIX" ]; then
    OLD=$(readlink "$PREFIX")
elif [ -d "$PREFIX" ]; then  # a venv made in place by an older install.sh
    OLD="$VENVS/previous-$(date +%s)"
    mv "$PREFIX" "$OLD"
fi
ln -s "$NEW" "$PREFIX.link.$$"
mv -T "$PREFIX.link.$$" "$PREFIX"
say "switched $PREFIX to $NEW"
NEW=""  # from here on it is the installation
ln -sfn "$PREFIX/bin/mgr-agent" /usr/local/bin/mgr-agent

# 4. the group, the directories
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
    install -d -m 0755 /run/mgr-agent /etc/mgr-agent
    install -d -m 0750 -g mgr-agent /var/lib/mgr-agent
fi

# 5. the units (ExecStart follows --prefix)
install -d -m 0755 "$UNIT_DIR"
sed "s#/opt/mgr-agent/#$PREFIX/#g" "$UNITS/mgr-agent.service" > "$UNIT_DIR/mgr-agent.service.new"
chmod 0644 "$UNIT_DIR/mgr-agent.service.new"
mv "$UNIT_DIR/mgr-agent.service.new" "$UNIT_DIR/mgr-agent.service"
install -m 0644 "$UNITS/mgr-agent.socket" "$UNIT_DIR/mgr-agent.socket"

# A core that an older agent started from inside the service lives in its cgroup and
# would be killed by the restart: move such processes into a scope of their own first.
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

# 6. enable; start (or restart, to run the new version) when systemd runs
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable --quiet mgr-agent.socket mgr-agent.service
    if [ "$START" = yes ]; then
        systemctl start mgr-agent.socket
        if systemctl is-active --quiet mgr-agent.service; then
            adopt_strays
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

# 7. older venvs go once the service runs the new one
for old in "$VENVS"/*; do
    [ "$old" = "$(readlink "$PREFIX")" ] || rm -rf "$old"
done
[ -z "$OLD" ] || say "removed the previous venv $OLD"
say "done in $(( $(date +%s) - STARTED )) s: $("$PREFIX/bin/mgr-agent" --version)"
