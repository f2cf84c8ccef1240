#!/bin/bash
# Scalelite's post-publish hook at a pinned release: after BBB publishes a
# recording it is packed into the spool on EFS, where Scalelite imports it.
# bbbnode points scalelite.yml's spool_dir at the mount at boot.
set -euxo pipefail
/opt/bbbfleet/bin/fetch-pinned \
    "https://github.com/blindsidenetworks/scalelite/archive/refs/tags/${SCALELITE_VERSION}.tar.gz" \
    "$SCALELITE_SHA256" /opt/bbbfleet/src/scalelite.tar.gz
work=$(mktemp -d)
tar -xzf /opt/bbbfleet/src/scalelite.tar.gz -C "$work" --strip-components=1
scripts=/usr/local/bigbluebutton/core/scripts
install -D -m 0644 -o bigbluebutton -g bigbluebutton \
    "$work/bigbluebutton/scalelite_post_publish.rb" "$scripts/post_publish/scalelite_post_publish.rb"
install -D -m 0644 -o bigbluebutton -g bigbluebutton \
    "$work/bigbluebutton/scalelite.yml" "$scripts/scalelite.yml"
rm -rf "$work"
