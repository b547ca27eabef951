#!/usr/bin/env bash
# popa3d for the integration tests, beside Dovecot (run as root).
#
# The Debian package popa3d conflicts with dovecot-pop3d (both provide
# pop3-server): installing one removes the other. So the package is only
# downloaded, its binary goes to /usr/local/sbin, and what its maintainer
# scripts would set up is done here: the unprivileged `popa3d` user it drops to
# for the login dialogue, the empty directory it locks that user into, and its
# PAM service. No daemon and no inetd entry: the tests start popa3d
# themselves, one process per connection, on 127.0.0.1 only.
set -euo pipefail
target=/usr/local/sbin/popa3d

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# apt downloads as its sandbox user _apt, which must be able to write here.
chmod 755 "$work"
chown _apt "$work" 2>/dev/null || true
cd "$work"
apt-get download popa3d || { apt-get update && apt-get download popa3d; }
dpkg-deb -x popa3d_*.deb root

install -D -m 755 root/usr/sbin/popa3d "$target"
[ -e /etc/pam.d/popa3d ] || install -m 644 root/etc/pam.d/popa3d /etc/pam.d/popa3d
getent group popa3d >/dev/null || groupadd --system popa3d
getent passwd popa3d >/dev/null ||
  useradd --system --gid popa3d --home-dir /var/lib/popa3d --no-create-home \
    --shell /usr/sbin/nologin popa3d
install -d -m 755 -o root -g root /var/lib/popa3d

# Fails here, not in the tests, when a shared library is missing.
"$target" -V
