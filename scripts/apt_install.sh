#!/usr/bin/env bash
# apt-get install the given Debian packages without letting their maintainer
# scripts start system daemons (the tests and benchmarks start their own).
# An existing /usr/sbin/policy-rc.d is left as it is.
set -euo pipefail
made_policy=
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  made_policy=1
fi
trap '[ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d' EXIT
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
