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
