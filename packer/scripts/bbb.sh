#!/bin/bash
# BigBlueButton 3.0 through bbb-install at a pinned commit (checked by SHA-256),
# without a hostname: each host gets its name, certificate and addresses from
# bbbnode at boot. coturn runs on every host; bbbnode configures it too.
set -euxo pipefail
export DEBIAN_FRONTEND=noninteractive
/opt/bbbfleet/bin/fetch-pinned \
    "https://raw.githubusercontent.com/bigbluebutton/bbb-install/${BBB_INSTALL_COMMIT}/bbb-install.sh" \
    "$BBB_INSTALL_SHA256" /opt/bbbfleet/src/bbb-install.sh
# BBB_INSTALL_ARGS is a list of options: split on purpose.
# shellcheck disable=SC2086
bash /opt/bbbfleet/src/bbb-install.sh $BBB_INSTALL_ARGS
apt-get -y -q install coturn
systemctl enable coturn

# nginx terminates TLS on this image and coturn serves TURN over TLS on its own
# port (bbbnode's host configuration). bbb-install's haproxy in front of both
# on 443 (bbb-install.sh install_haproxy(), lines 729-830, enabled at line 365)
# would hold 443 and names the builder's private address: remove it.
systemctl disable --now haproxy.service || true
apt-get -y -q purge haproxy

# netfilter-persistent restores /etc/iptables/rules.v4 at boot, where the host
# helper keeps coturn's DNAT rule (bbb-install installs it only when it saw the
# builder's NAT, bbb-install.sh lines 366-373).
echo "iptables-persistent iptables-persistent/autosave_v4 boolean false" | debconf-set-selections
echo "iptables-persistent iptables-persistent/autosave_v6 boolean false" | debconf-set-selections
apt-get -y -q install iptables-persistent
systemctl enable netfilter-persistent
