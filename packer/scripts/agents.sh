#!/bin/bash
# amazon-efs-utils (built from its pinned release), node exporter (Ubuntu's
# package), Grafana Alloy (pinned release binary) for the logs.
set -euxo pipefail
export DEBIAN_FRONTEND=noninteractive

# efs-utils has no Ubuntu package: build its .deb from the release, then drop
# the build tools again.
build_deps=(git binutils rustc cargo pkg-config libssl-dev)
apt-get -y -q install "${build_deps[@]}"
/opt/bbbfleet/bin/fetch-pinned \
    "https://github.com/aws/efs-utils/archive/refs/tags/${EFS_UTILS_VERSION}.tar.gz" \
    "$EFS_UTILS_SHA256" /opt/bbbfleet/src/efs-utils.tar.gz
work=$(mktemp -d)
tar -xzf /opt/bbbfleet/src/efs-utils.tar.gz -C "$work" --strip-components=1
(cd "$work" && ./build-deb.sh)
apt-get -y -q install "$work"/build/amazon-efs-utils*.deb
rm -rf "$work"
apt-get -y -q purge "${build_deps[@]}"
apt-get -y -q autoremove

# Listens on :9100; the security group opens it to the VPC only.
apt-get -y -q install prometheus-node-exporter
systemctl enable prometheus-node-exporter

/opt/bbbfleet/bin/fetch-pinned \
    "https://github.com/grafana/alloy/releases/download/v${ALLOY_VERSION}/alloy-linux-amd64.zip" \
    "$ALLOY_SHA256" /opt/bbbfleet/src/alloy.zip
unzip -o -q /opt/bbbfleet/src/alloy.zip -d /opt/bbbfleet/src
install -m 0755 /opt/bbbfleet/src/alloy-linux-amd64 /usr/local/bin/alloy
id alloy >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin alloy
install -d -m 0755 /etc/alloy
install -m 0644 /tmp/bbbfleet/config.alloy /etc/alloy/config.alloy
install -m 0644 /tmp/bbbfleet/files/alloy.service /etc/systemd/system/alloy.service
systemctl enable alloy
