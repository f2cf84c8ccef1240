#!/bin/bash
# Base of the host image: the builder's cloud-init done, packages current,
# the tools later steps use.
set -euxo pipefail
export DEBIAN_FRONTEND=noninteractive
cloud-init status --wait >/dev/null || true
apt-get update -q
apt-get -y -q -o Dpkg::Options::=--force-confold dist-upgrade
apt-get -y -q install ca-certificates curl unzip gnupg software-properties-common
install -d -m 0755 /opt/bbbfleet/bin /opt/bbbfleet/src /var/lib/bbbfleet
install -m 0755 /tmp/bbbfleet/files/fetch-pinned /opt/bbbfleet/bin/fetch-pinned
