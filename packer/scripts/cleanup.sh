#!/bin/bash
# Leave nothing of the build behind: every host starts as a new machine, and
# cloud-init runs the launch template's user data on first boot.
set -euxo pipefail
apt-get -y -q autoremove
apt-get clean
rm -rf /tmp/bbbfleet /opt/bbbfleet/src /var/lib/bbbfleet/bbb-secret-set
cloud-init clean --logs
truncate -s 0 /etc/machine-id
rm -f /root/.bash_history /home/ubuntu/.bash_history
