"""A BBB 3.0 host's configuration files as bbb-install leaves them on the image.

The image-building instance's name and addresses are in them; a launched
instance must replace those (bbbnode/hostconfig.py). bbbsim lays this tree out
for every emulated host, and the host-configuration tests start from it.
"""

from __future__ import annotations

from pathlib import Path

from bbbnode.hostconfig import HostPaths

BBB_WEB_PROPERTIES = """\
#
# Overrides for bbb-web, see /usr/share/bbb-web/WEB-INF/classes/bigbluebutton.properties
#
bigbluebutton.web.serverURL=https://builder.example.org
securitySalt=3b2f6c0a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a
defaultGuestPolicy=ALWAYS_ACCEPT
"""

HTML5_YML = """\
# Local overrides of the client settings
public:
  app:
    appName: Fleet BBB
    # keep this comment
    helpLink: https://help.example.org/
  kurento:
    wsUrl: wss://builder.example.org/bbb-webrtc-sfu
  media:
    audio:
      defaultFullAudioBridge: fullaudio
  clientLog:
    server:
      - enabled: true
        level: info
private:
  app:
    host: 127.0.0.1
"""

AKKA_CONF = """\
include "/usr/share/bbb-apps-akka/conf/application.conf"

services {
  bbbWebAPI="https://builder.example.org/bigbluebutton/api"
  sharedSecret="3b2f6c0a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a"
}
"""

RECORDING_YML = """\
bbb_version: '3.0.0'
raw_audio_src: /var/freeswitch/meetings
playback_host: builder.example.org
playback_protocol: https
steps:
  archive: 'sanity'
"""

NGINX_SITE = """\
server_tokens off;

server {
  listen 80;
  listen [::]:80;
  server_name builder.example.org;

  location ^~ / {
    return 301 https://$server_name$request_uri; #redirect HTTP to HTTPS
  }
}

server {
  # listen 443 ssl http2;
  listen 443 ssl;
  listen [::]:443 ssl;
  server_name builder.example.org;

    ssl_certificate /etc/letsencrypt/live/builder.example.org/fullchain.pem;
    ssl_certificate_key /etc/letsencrypt/live/builder.example.org/privkey.pem;
    ssl_session_cache shared:SSL:10m;
    ssl_dhparam /etc/nginx/ssl/ffdhe2048.pem;

  access_log  /var/log/nginx/bigbluebutton.access.log;

  location / {
    root   /var/www/bigbluebutton-default/assets;
    try_files $uri @bbb-fe;
  }

  include /etc/bigbluebutton/nginx/*.nginx;
}
"""

NGINX_CONF = """\
user www-data;
worker_processes auto;
pid /run/nginx.pid;

events {
\tworker_connections 768;
}

http {
\tsendfile on;
\t# server_names_hash_bucket_size 64;
\tinclude /etc/nginx/conf.d/*.conf;
\tinclude /etc/nginx/sites-enabled/*;
}
"""

FS_VARS = """\
<include>
  <!-- <X-PRE-PROCESS cmd="set" data="external_rtp_ip=192.0.2.1"/> -->
  <X-PRE-PROCESS cmd="set" data="default_password=1234"/>
  <X-PRE-PROCESS cmd="set" data="local_ip_v4=10.0.9.9"/>
  <X-PRE-PROCESS cmd="set" data="external_rtp_ip=203.0.113.9"/>
  <X-PRE-PROCESS cmd="set" data="external_sip_ip=203.0.113.9"/>
</include>
"""

FS_EXTERNAL = """\
<profile name="external">
  <gateways>
    <X-PRE-PROCESS cmd="include" data="external/*.xml"/>
  </gateways>
  <settings>
    <param name="sip-ip" value="$${local_ip_v4}"/>
    <param name="ext-rtp-ip" value="auto-nat"/>
    <param name="ext-sip-ip" value="auto-nat"/>
    <param name="ws-binding" value=":5066"/>
  </settings>
</profile>
"""

TURNSERVER_CONF = """\
listening-port=3478

listening-ip=10.0.9.9
relay-ip=10.0.9.9

min-port=32769
max-port=65535
verbose

fingerprint
lt-cred-mech
use-auth-secret
static-auth-secret=oldsecretfromtheimage
realm=builder.example.org

keep-address-family
no-cli
no-tlsv1
no-tlsv1_1

denied-peer-ip=0.0.0.0-255.255.255.255
allowed-peer-ip=203.0.113.9
allowed-peer-ip=10.0.9.9
"""

FIXTURES: dict[str, str] = {
    "bbb_web_properties": BBB_WEB_PROPERTIES,
    "html5_settings": HTML5_YML,
    "akka_apps_conf": AKKA_CONF,
    "recording_config": RECORDING_YML,
    "nginx_site": NGINX_SITE,
    "nginx_conf": NGINX_CONF,
    "freeswitch_vars": FS_VARS,
    "freeswitch_external": FS_EXTERNAL,
    "coturn_conf": TURNSERVER_CONF,
}


def make_host(root: Path) -> HostPaths:
    """Write the stock files under ``root``; the HostPaths that point at them."""
    paths = HostPaths.under(root)
    for name, text in FIXTURES.items():
        path: Path | None = getattr(paths, name)
        assert path is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert paths.turn_stun_servers is not None
    paths.turn_stun_servers.parent.mkdir(parents=True, exist_ok=True)
    assert paths.coturn_conf is not None
    paths.coturn_conf.chmod(0o640)
    return paths
