"""A compose file's services as local processes, without Docker.

Service names resolve to 127.0.0.1 and each (service, container port) gets a free local
port; volumes become directories (bind mounts the repository's own); each service's command
line is the one its container runs, with those addresses and paths put in. The gateway
image's command lines run with this interpreter from the repository's root, which is what
the image's working directory holds.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.deploy import images
from tests.examples.processes import ROOT, mlserver_env, mlserver_script
from tests.hops.upstreams import free_port

GATEWAY_BUILD = "."
MLSERVER_IMAGE = "seldonio/mlserver:"
# MLServer's settings for its ports, and their defaults.
MLSERVER_PORTS = {
    "MLSERVER_HTTP_PORT": 8080,
    "MLSERVER_GRPC_PORT": 8081,
    "MLSERVER_METRICS_PORT": 8082,
}


def is_gateway(spec: dict[str, Any]) -> bool:
    """Built from this repository's Dockerfile."""
    build = spec.get("build")
    context = build.get("context") if isinstance(build, dict) else build
    return context == GATEWAY_BUILD


def is_mlserver(spec: dict[str, Any]) -> bool:
    return str(spec.get("image", "")).startswith(MLSERVER_IMAGE)


def environment(spec: dict[str, Any]) -> dict[str, str]:
    """A service's environment, from either of compose's two forms."""
    env = spec.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def depends_on(spec: dict[str, Any]) -> dict[str, str]:
    """Service -> condition, from either of compose's two forms."""
    depends = spec.get("depends_on") or {}
    if isinstance(depends, list):
        return dict.fromkeys(depends, "service_started")
    return {name: entry.get("condition", "service_started") for name, entry in depends.items()}


def argv(spec: dict[str, Any]) -> list[str]:
    """The container's command line: entrypoint (the service's, or the image's) + command."""
    command = spec.get("command") or []
    command = command.split() if isinstance(command, str) else [str(c) for c in command]
    entry = spec.get("entrypoint")
    if entry is None:
        entry = images.entrypoint() if is_gateway(spec) else []
    entry = entry.split() if isinstance(entry, str) else [str(e) for e in entry]
    return [*entry, *command]


def gateway_flags(spec: dict[str, Any]) -> argparse.Namespace:
    """A gateway service's flags, as `gateway serve` parses them."""
    return images.parse_serve(argv(spec))


def mlserver_ports(spec: dict[str, Any]) -> dict[str, int]:
    env = environment(spec)
    return {key: int(env.get(key, default)) for key, default in MLSERVER_PORTS.items()}


@dataclass
class LocalCompose:
    compose: dict[str, Any]
    workdir: Path
    ports: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def services(self) -> dict[str, dict[str, Any]]:
        services: dict[str, dict[str, Any]] = self.compose["services"]
        return services

    def port(self, service: str, container_port: int) -> int:
        """The local port standing for `service`'s `container_port`."""
        key = (service, container_port)
        if key not in self.ports:
            self.ports[key] = free_port()
        return self.ports[key]

    def localize(self, service: str, value: str) -> str:
        """`value` as seen from here: ``service:port`` -> ``127.0.0.1:local``, and paths
        inside `service`'s volumes -> the directories standing for them."""
        names = "|".join(re.escape(name) for name in sorted(self.services, key=len, reverse=True))
        reference = re.compile(rf"(?<![\w.-])({names}):(\d+)\b")
        value = reference.sub(lambda m: f"127.0.0.1:{self.port(m[1], int(m[2]))}", value)
        flag, equals, path = value.partition("=") if value.startswith("--") else ("", "", value)
        for container, host in self.mounts(service):
            if path == container or path.startswith(container + "/"):
                return f"{flag}{equals}{host}{path[len(container) :]}"
        return value

    def mounts(self, service: str) -> list[tuple[str, Path]]:
        """(container path, local directory) for each of `service`'s volumes."""
        found = []
        for volume in self.services[service].get("volumes") or []:
            source, target = str(volume).split(":")[:2]
            if source.startswith((".", "/")):
                host = (ROOT / source).resolve()
            else:  # a named volume
                host = self.workdir / "volumes" / source
                host.mkdir(parents=True, exist_ok=True)
            found.append((target, host))
        return found

    def environment(self, service: str) -> dict[str, str]:
        env = environment(self.services[service])
        return {key: self.localize(service, value) for key, value in env.items()}

    def command(self, service: str) -> tuple[list[str], dict[str, str]]:
        """The local command line and extra environment standing for `service`."""
        spec = self.services[service]
        line = [self.localize(service, token) for token in argv(spec)]
        env = self.environment(service)
        if is_gateway(spec):
            flags = gateway_flags(spec)
            local = [
                "--http_port", str(self.port(service, flags.http_port)),
                "--grpc_port", str(self.port(service, flags.grpc_port)),
                "--listen_address", "127.0.0.1",
            ]  # fmt: skip
            return [sys.executable, "-m", "gateway", *line[1:], *local], env
        if is_mlserver(spec) and line[:1] == ["mlserver"]:
            ports = mlserver_ports(spec)
            env.update(
                mlserver_env(
                    self.port(service, ports["MLSERVER_HTTP_PORT"]),
                    self.port(service, ports["MLSERVER_GRPC_PORT"]),
                    self.port(service, ports["MLSERVER_METRICS_PORT"]),
                )
            )
            return [mlserver_script(), *line[1:]], env
        if line[:1] == ["python"]:
            return [sys.executable, *line[1:]], env
        raise NotImplementedError(f"no local stand-in for service {service!r}: {line}")
