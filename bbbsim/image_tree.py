"""A BBB 3.0 host's configuration files as bbb-install leaves them on the image.

The tree is the image-building instance after ``bbb-install.sh -v jammy-300 -s
builder.example.org`` (bigbluebutton/bbb-install, branch v3.0.x-release) ran on
an EC2 instance behind the 1:1 NAT: get_IP() found a private address and a
different public one (bbb-install.sh lines 470-534), so every file it writes
names the builder's name, its public address (``IP``) or its private one
(``INTERNAL_IP``): check_nat(), install_ssl() with its bbb-webrtc-sfu block,
install_coturn() and configure_coturn(), the DNAT rule it saves with
netfilter-persistent, and ``bbb-conf --setip``. What packer/scripts/bbb.sh
removes afterwards (haproxy and its configuration) is not here.

A launched instance must replace all of it (bbbnode/hostconfig.py). bbbsim lays
this tree out for every emulated host, and the host-configuration tests start
from it.
"""

from __future__ import annotations

import re
from pathlib import Path

from bbbnode.hostconfig import HostPaths

BUILDER_NAME = "builder.example.org"
BUILDER_PUBLIC_IP = "203.0.113.9"
BUILDER_PRIVATE_IP = "10.0.9.9"

BBB_WEB_PROPERTIES = """\
#
# Overrides for bbb-web, see /usr/share/bbb-web/WEB-INF/classes/bigbluebutton.properties
#
bigbluebutton.web.serverURL=https://builder.example.org
securitySalt=3b2f6c0a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a
defaultGuestPolicy=ALWAYS_ACCEPT
"""

# An admin's overrides, with the builder's URLs as --setip writes them and
# sipjsHackViaWs from install_ssl() (line 1640).
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
    sipjsHackViaWs: true
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

# install_ssl() without -c (bbb-install.sh lines 1480-1540): TLS is haproxy's,
# nginx listens on loopback behind it.
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

set_real_ip_from 127.0.0.1;
real_ip_header proxy_protocol;
real_ip_recursive on;
server {
  # haproxy decides by ALPN: h2 to 82, the rest to 81.
  listen 127.0.0.1:82 http2 proxy_protocol;
  listen [::1]:82 http2;
  listen 127.0.0.1:81 proxy_protocol;
  listen [::1]:81;
  server_name builder.example.org;

  absolute_redirect off;
  access_log  /var/log/nginx/bigbluebutton.access.log;
  set $real_scheme "https";

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

# check_nat() (lines 677-678) and install_ssl() (lines 1632, 1642).
FS_EXTERNAL = """\
<profile name="external">
  <gateways>
    <X-PRE-PROCESS cmd="include" data="external/*.xml"/>
  </gateways>
  <settings>
    <param name="sip-ip" value="$${local_ip_v4}"/>
    <param name="ext-rtp-ip" value="$${external_rtp_ip}"/>
    <param name="ext-sip-ip" value="$${external_sip_ip}"/>
    <param name="ws-binding" value="203.0.113.9:5066"/>
    <param name="wss-binding" value="203.0.113.9:7443"/>
  </settings>
</profile>
"""

# install_coturn() (lines 1766-1805) with INTERNAL_IP set.
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

no-loopback-peers
no-multicast-peers

denied-peer-ip=0.0.0.0-255.255.255.255
denied-peer-ip=::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff
allowed-peer-ip=203.0.113.9
allowed-peer-ip=10.0.9.9
"""

# configure_coturn() (lines 1699-1753): the TURN list names the host.
TURN_STUN_SERVERS = """\
<?xml version="1.0" encoding="UTF-8"?>
<beans xmlns="http://www.springframework.org/schema/beans"
        xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
        xsi:schemaLocation="http://www.springframework.org/schema/beans
        http://www.springframework.org/schema/beans/spring-beans-2.5.xsd">
    <bean id="turn0" class="org.bigbluebutton.web.services.turn.TurnServer">
        <constructor-arg index="0" value="oldsecretfromtheimage"/>
        <constructor-arg index="1" value="turn:builder.example.org:3478"/>
        <constructor-arg index="2" value="86400"/>
    </bean>
    <bean id="turn1" class="org.bigbluebutton.web.services.turn.TurnServer">
        <constructor-arg index="0" value="oldsecretfromtheimage"/>
        <constructor-arg index="1" value="turns:builder.example.org:443?transport=tcp"/>
        <constructor-arg index="2" value="86400"/>
    </bean>
    <bean id="stunTurnService" class="org.bigbluebutton.web.services.turn.StunTurnService">
        <property name="stunServers"><set></set></property>
        <property name="turnServers">
            <set>
                <ref bean="turn0"/>
                <ref bean="turn1"/>
            </set>
        </property>
    </bean>
</beans>
"""

# bbb-conf --setip (the ESL password) and install_ssl()'s yq edits (lines 1669-1694).
WEBRTC_SFU_YML = """\
freeswitch:
  esl_password: 6a4f0e2b9c1d3e58
  ip: 203.0.113.9
  sip_ip: 203.0.113.9
mediasoup:
  webrtc:
    listenIps:
      - ip: 0.0.0.0
        announcedIp: 203.0.113.9
  plainRtp:
    listenIp:
      ip: 0.0.0.0
      announcedIp: 203.0.113.9
"""

# The package's file after check_nat()'s sed (line 680) and install_ssl() (line 1641).
SIP_NGINX = """\
location /ws {
        proxy_pass http://203.0.113.9:5066;
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection "Upgrade";
        proxy_read_timeout 6h;
        proxy_send_timeout 6h;
        client_body_timeout 6h;
        send_timeout 6h;

        auth_request /bigbluebutton/connection/checkAuthorization;
        auth_request_set $auth_status $upstream_status;
}
"""

# check_nat() (lines 689-701).
DUMMY_NIC_SERVICE = """\
[Unit]
Description=Configure dummy NIC for FreeSWITCH
Before=freeswitch.service
After=network.target

[Service]
ExecStart=/sbin/ip addr add 203.0.113.9 dev lo

[Install]
WantedBy=multi-user.target
"""

# netfilter-persistent save (line 373) after docker (installed by bbb-install) added its rules.
RULES_V4 = """\
# Generated by iptables-save v1.8.7 on Tue Jan  9 10:00:00 2024
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT -s 10.0.9.9/32 -d 203.0.113.9/32 -p udp -j DNAT --to-destination 10.0.9.9
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
COMMIT
# Completed on Tue Jan  9 10:00:00 2024
# Generated by iptables-save v1.8.7 on Tue Jan  9 10:00:00 2024
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
COMMIT
# Completed on Tue Jan  9 10:00:00 2024
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
    "turn_stun_servers": TURN_STUN_SERVERS,
    "webrtc_sfu": WEBRTC_SFU_YML,
    "sip_nginx": SIP_NGINX,
    "dummy_nic": DUMMY_NIC_SERVICE,
    "iptables_rules": RULES_V4,
}
MODES: dict[str, int] = {"coturn_conf": 0o640, "turn_stun_servers": 0o640, "iptables_rules": 0o640}
"""bbb-install's chmod 640 (lines 1752, 1805); netfilter-persistent's umask."""


def make_host(root: Path) -> HostPaths:
    """Write the stock files under ``root``; the HostPaths that point at them."""
    paths = HostPaths.under(root)
    for name, text in FIXTURES.items():
        path: Path | None = getattr(paths, name)
        assert path is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(MODES.get(name, 0o644))
    return paths


def traces(root: Path, *needles: str) -> list[str]:
    """``file: needle`` for every file under ``root`` that still names one of ``needles``
    (an address or a name), a whole token: 10.0.9.9 does not match inside 10.0.9.99."""
    patterns = [re.compile(r"(?<![\d.])" + re.escape(n) + r"(?![\d])") for n in needles]
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        text = path.read_text(errors="replace")
        found += [f"{path.relative_to(root)}: {p.pattern}" for p in patterns if p.search(text)]
    return found
