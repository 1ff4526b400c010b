"""The deployment files agree with each other and with the relay's command line.

docker-compose.yml is read with PyYAML (no Docker engine runs here). deploy/nginx.conf
must be exactly what deploy/render_nginx.py makes of deploy/nginx.conf.template with the
compose values, the same template the browser tests run nginx from.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from e2ehelpers import ROOT, WEB, load_render_nginx

from stomprelay.cli import build_parser
from stomprelay.settings import Settings
from stomprelay.transport.hygiene import TrustedProxies

pytestmark = pytest.mark.e2e

COMPOSE = ROOT / "docker-compose.yml"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
RELAYS = {"relay-1", "relay-2"}
#: nginx's fixed address on the compose network: the one proxy the relays trust.
NGINX_ADDRESS = "172.28.0.10"


def load_compose() -> dict[str, Any]:
    text = COMPOSE.read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def nginx_blocks(text: str) -> dict[str, str]:
    """``upstream NAME`` and ``location ...`` blocks of a config, by their header line."""
    text = re.sub(r"#[^\n]*", "", text)
    blocks = {}
    for match in re.finditer(r"(upstream\s+\S+|location\s+[^{]+?)\s*\{([^{}]*)\}", text):
        blocks[" ".join(match.group(1).split())] = match.group(2)
    return blocks


def directives(block: str) -> list[list[str]]:
    return [part.split() for part in block.split(";") if part.strip()]


def test_compose_services() -> None:
    everything = load_compose()["services"]
    # the default profile; the others (a Redis Cluster) start only when asked for
    services = {name: s for name, s in everything.items() if not s.get("profiles")}
    assert set(services) == {"redis", "relay-1", "relay-2", "nginx"}
    assert services["redis"]["image"] == "redis:7-alpine"
    redis_args = services["redis"]["command"]
    # history survives a restart (AOF on a volume) and is never evicted
    assert redis_args[redis_args.index("--appendonly") + 1] == "yes"
    assert redis_args[redis_args.index("--maxmemory-policy") + 1] == "noeviction"
    assert services["redis"]["volumes"] == ["redis-data:/data"]
    assert "redis-data" in load_compose()["volumes"]

    for name in RELAYS:
        relay = services[name]
        assert relay["build"] == "."
        assert relay["command"] == ["stomprelay", "serve"]
        assert relay["depends_on"]["redis"]["condition"] == "service_healthy"
        check = " ".join(relay["healthcheck"]["test"])
        assert "urllib.request" in check
        assert "http://127.0.0.1:8080/health" in check
        assert "ports" not in relay, "relays are reached through nginx only"

    nginx = services["nginx"]
    assert nginx["image"].split(":")[0] == "nginx"
    assert nginx["networks"]["default"]["ipv4_address"] == NGINX_ADDRESS
    subnet = load_compose()["networks"]["default"]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_address(NGINX_ADDRESS) in ipaddress.ip_network(subnet)
    assert nginx["ports"] == ["8080:80"]
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert {
        name for name, cond in nginx["depends_on"].items() if cond["condition"] == "service_healthy"
    } == RELAYS


def test_compose_env_is_what_the_cli_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    services = load_compose()["services"]
    for name in sorted(RELAYS):
        env = services[name]["environment"]
        assert env == {
            "REDIS_URL": "redis://redis:6379/0",
            "SERVER_ID": name,
            "PORT": "8080",
            "TRUSTED_PROXIES": f"{NGINX_ADDRESS}/32",
        }
        for variable in (
            "REDIS_URL",
            "REDIS_HOST",
            "REDIS_PORT",
            "SERVER_ID",
            "PORT",
            "HOST",
            "TRUST_PROXY",
            "TRUSTED_PROXIES",
        ):
            monkeypatch.delenv(variable, raising=False)
        for variable, value in env.items():
            monkeypatch.setenv(variable, str(value))
        args = build_parser().parse_args(["serve"])
        assert args.redis_url == "redis://redis:6379/0"
        assert args.server_id == name
        assert args.port == 8080
        assert args.trust_proxy is False, "--trust-proxy (loopback only) is deprecated"
        assert args.trusted_proxies == (f"{NGINX_ADDRESS}/32",)
        nginx = TrustedProxies(args.trusted_proxies)
        assert nginx.client(NGINX_ADDRESS, ["203.0.113.7"]) == "203.0.113.7"
        # the network's gateway (the Docker host, its port proxy) is no proxy of ours: a
        # forged loopback address through it does not open the loopback-only API
        assert nginx.client(NGINX_ADDRESS, ["127.0.0.1, 172.28.0.1"]) == "172.28.0.1"
        assert nginx.client("172.28.0.1", ["127.0.0.1"]) == "172.28.0.1", "not from nginx"
        assert args.host == "0.0.0.0", "a relay in a container must listen on every interface"


def test_nginx_conf_is_the_template_rendered_with_the_compose_values() -> None:
    render = load_render_nginx()
    assert NGINX_CONF.read_text(encoding="utf-8") == render.render_compose(), (
        "deploy/nginx.conf is stale: run python deploy/render_nginx.py"
    )
    assert render.main(["--check"]) == 0
    # Every placeholder of the template is filled, and only nginx's own variables remain.
    assert not render.PLACEHOLDER.search(NGINX_CONF.read_text(encoding="utf-8"))


def test_render_refuses_missing_and_unknown_placeholders() -> None:
    render = load_render_nginx()
    with pytest.raises(KeyError, match="LISTEN"):
        render.render_text("listen ${LISTEN}; $host", {})
    with pytest.raises(KeyError, match="EXTRA"):
        render.render_text("listen ${LISTEN};", {"LISTEN": "80", "EXTRA": "x"})
    assert render.render_text("listen ${LISTEN}; $host ${host}", {"LISTEN": "80"}) == (
        "listen 80; $host ${host}"
    )


def test_nginx_conf_balances_both_relays_and_upgrades_websockets() -> None:
    text = NGINX_CONF.read_text(encoding="utf-8")
    blocks = nginx_blocks(text)

    servers = [d[1] for d in directives(blocks["upstream stomprelay"]) if d[0] == "server"]
    assert servers == ["relay-1:8080", "relay-2:8080"]
    # Round robin: a reconnecting client must be able to land on the surviving relay.
    assert not any(
        d[0] in ("ip_hash", "hash", "sticky") for d in directives(blocks["upstream stomprelay"])
    )
    assert re.search(r"^\s*listen 80;", text, re.MULTILINE)

    ws = {d[0]: d[1:] for d in directives(blocks["location = /ws"])}
    assert ws["proxy_pass"] == ["http://stomprelay"]
    # A location with a proxy_set_header of its own inherits none of the server's: all
    # of them are set once, at the server level, so /ws gets the client's address too.
    for name, block in blocks.items():
        assert not any(d[0] == "proxy_set_header" for d in directives(block)), name
    headers = dict(re.findall(r"^\s*proxy_set_header\s+(\S+)\s+(.+?);", text, re.MULTILINE))
    assert headers["Upgrade"] == "$http_upgrade"
    assert headers["Connection"] == "$connection_upgrade"
    assert headers["X-Forwarded-For"] == "$proxy_add_x_forwarded_for"
    # the Host as the browser sent it, port included (the relay's same-origin check)
    assert headers["Host"] == headers["X-Forwarded-Host"] == "$forwarded_host"
    assert re.search(r"map \$http_host \$forwarded_host \{[^}]*default \$http_host;", text)
    assert re.search(r"proxy_http_version 1\.1;", text)
    read_timeout = int(ws["proxy_read_timeout"][0].rstrip("s"))
    heartbeat_s = Settings().heartbeat_send_ms / 1000
    assert read_timeout >= 10 * heartbeat_s * Settings().heartbeat_grace
    assert read_timeout >= 3600

    root = {d[0]: d[1:] for d in directives(blocks["location /"])}
    assert root["proxy_pass"] == ["http://stomprelay"]


def test_dockerfile_builds_the_relay_with_the_web_dependencies() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    froms = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert froms[-1] == "python:3.11-slim"
    assert "npm ci" in text
    assert "node_modules/@stomp" in text
    assert re.search(r'^CMD \["stomprelay", "serve"\]$', text, re.MULTILINE)
    assert re.search(r"^HEALTHCHECK .*", text, re.MULTILINE)
    assert "/health" in text
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert "**/node_modules" in ignored


def test_web_dependencies_are_declared_locked_and_loaded_from_node_modules() -> None:
    package = json.loads((WEB / "package.json").read_text(encoding="utf-8"))
    lock = json.loads((WEB / "package-lock.json").read_text(encoding="utf-8"))
    version = package["dependencies"]["@stomp/stompjs"]
    assert version.split(".")[0].lstrip("^~") == "7"
    assert lock["packages"][""]["dependencies"] == package["dependencies"]
    assert lock["packages"]["node_modules/@stomp/stompjs"]["version"].startswith("7.")
    html = (WEB / "index.html").read_text(encoding="utf-8")
    assert 'src="node_modules/@stomp/stompjs/bundles/stomp.umd.min.js"' in html
    # No third-party code is committed: the bundle only exists after `npm ci`.
    assert not list(WEB.glob("*.min.js"))
