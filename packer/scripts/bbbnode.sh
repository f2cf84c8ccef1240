#!/bin/bash
# bbbnode from the project's wheel in its own venv at /opt/bbbfleet/venv, its
# dependencies at the versions the project tests (requirements.lock), and the
# units enabled: bbbnode.service (unprivileged) and bbbnode-host.socket, which
# starts the privileged host helper when bbbnode first asks for a host step. Configuration comes at boot: /etc/default/bbbnode from the
# launch template's user data.
set -euxo pipefail
export DEBIAN_FRONTEND=noninteractive
# bbbnode needs Python 3.11; Ubuntu 22.04 ships 3.10.
add-apt-repository -y ppa:deadsnakes/ppa
apt-get -y -q install python3.11 python3.11-venv

id bbbnode >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin bbbnode
python3.11 -m venv /opt/bbbfleet/venv
/opt/bbbfleet/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
    -c /tmp/bbbfleet/requirements.lock /tmp/bbbfleet/bbbfleet-*.whl
/opt/bbbfleet/venv/bin/bbbnode --version

install -d -m 0750 -g bbbnode /etc/bbbfleet
install -m 0640 -g bbbnode /dev/null /etc/bbbfleet/bbbnode.toml
install -m 0644 /tmp/bbbfleet/bbbnode.service /etc/systemd/system/bbbnode.service
# The privileged host helper, started on demand through its socket (root:bbbnode 0660).
install -m 0644 /tmp/bbbfleet/bbbnode-host.service /etc/systemd/system/bbbnode-host.service
install -m 0644 /tmp/bbbfleet/bbbnode-host.socket /etc/systemd/system/bbbnode-host.socket
# The recordings mount point exists before the helper starts, so its
# ReadWritePaths= entry binds it (the mount itself is PID 1's, at boot or on request).
install -d -m 0755 /mnt/scalelite-recordings
install -D -m 0644 /tmp/bbbfleet/files/bbbnode-image.conf \
    /etc/systemd/system/bbbnode.service.d/bbbfleet-image.conf
install -m 0755 /tmp/bbbfleet/files/bbbfleet-bbb-secret /opt/bbbfleet/bin/bbbfleet-bbb-secret
install -m 0644 /tmp/bbbfleet/files/bbbfleet-bbb-secret.service \
    /etc/systemd/system/bbbfleet-bbb-secret.service
systemctl daemon-reload
systemctl enable bbbfleet-bbb-secret.service bbbnode-host.socket bbbnode.service
