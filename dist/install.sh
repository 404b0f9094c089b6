#!/bin/sh
# Installs lbha from an unpacked release tarball (cargo xtask dist).
#
#   sudo ./install.sh                    # /usr/local/bin, /etc/systemd/system, /etc/lbha
#   sudo PREFIX=/usr ./install.sh        # the binary in /usr/bin (the unit follows)
#   DESTDIR=/tmp/root ./install.sh       # the same tree below /tmp/root (packaging, tests)
#
# Replaced on every run: the binary, the unit file, /etc/lbha/examples and
# the README. Never overwritten: /etc/lbha/lbha.toml and
# /etc/default/lbha-agent (your configuration). Nothing is enabled or
# started. With systemd running (and no DESTDIR), `systemctl daemon-reload`
# makes systemd see the new unit.
set -eu

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}

case $PREFIX in
/*) ;;
*)
    echo "install.sh: PREFIX must be an absolute path (got '$PREFIX')" >&2
    exit 1
    ;;
esac
if [ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root (or set DESTDIR to install below another directory)" >&2
    exit 1
fi

bindir=$PREFIX/bin
docdir=$PREFIX/share/doc/lbha
confdir=/etc/lbha
unitdir=/etc/systemd/system

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM

say() { echo "install.sh: $*"; }

# put MODE SOURCE TARGET: installs SOURCE as $DESTDIR/TARGET, replacing it
# through a rename (a running lbha-agent keeps its old binary).
put() {
    target=$DESTDIR$3
    mkdir -p "$(dirname -- "$target")"
    cp -- "$2" "$target.new.$$"
    chmod "$1" "$target.new.$$"
    mv -f -- "$target.new.$$" "$target"
    say "installed $3"
}

# put_config MODE SOURCE TARGET: as put, unless TARGET already exists.
put_config() {
    if [ -e "$DESTDIR$3" ]; then
        say "kept existing $3"
    else
        put "$@"
    fi
}

put 0755 "$here/bin/lbha-agent" "$bindir/lbha-agent"

# The unit names the installed binary and README.
sed -e "s|/usr/local/bin/lbha-agent|$bindir/lbha-agent|g" \
    -e "s|/usr/local/share/doc/lbha|$docdir|g" \
    "$here/systemd/lbha-agent.service" >"$tmp/lbha-agent.service"
put 0644 "$tmp/lbha-agent.service" "$unitdir/lbha-agent.service"

# Configuration: root only (it may hold auth_pass secrets or a token).
mkdir -p "$DESTDIR$confdir"
chmod 0750 "$DESTDIR$confdir"
for example in "$here"/examples/*; do
    put 0644 "$example" "$confdir/examples/$(basename -- "$example")"
done
put_config 0640 "$here/examples/lbha.toml" "$confdir/lbha.toml"
put_config 0600 "$here/default/lbha-agent" /etc/default/lbha-agent
put 0644 "$here/README.md" "$docdir/README.md"

if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl daemon-reload
    say "systemctl daemon-reload done"
else
    say "systemd not running here (or DESTDIR set): skipped systemctl daemon-reload"
fi

cat <<EOF

Next steps:
  1. Edit $confdir/lbha.toml (an example until you do; keepalived.conf users:
     set LBHA_ARGS in /etc/default/lbha-agent instead).
  2. Check it:   $bindir/lbha-agent check-config $confdir/lbha.toml
  3. Switch:     systemctl disable --now keepalived; systemctl enable --now lbha-agent
  4. Watch it:   journalctl -u lbha-agent -f   and   lbha-agent status
EOF
