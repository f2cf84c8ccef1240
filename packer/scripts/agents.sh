#!/bin/bash
# amazon-efs-utils (built from its pinned release), node exporter (Ubuntu's
# package), Promtail (pinned release binary).
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
    "https://github.com/grafana/loki/releases/download/v${PROMTAIL_VERSION}/promtail-linux-amd64.zip" \
    "$PROMTAIL_SHA256" /opt/bbbfleet/src/promtail.zip
unzip -o -q /opt/bbbfleet/src/promtail.zip -d /opt/bbbfleet/src
install -m 0755 /opt/bbbfleet/src/promtail-linux-amd64 /usr/local/bin/promtail
id promtail >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin promtail
install -d -m 0755 /etc/promtail
install -m 0644 /tmp/bbbfleet/promtail.yaml /etc/promtail/config.yml
install -m 0644 /tmp/bbbfleet/files/promtail.service /etc/systemd/system/promtail.service
systemctl enable promtail
