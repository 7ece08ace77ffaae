"""A stack's plan: what ``nyx compose up`` asks nyxd for, in order.

:func:`plan_stack` orders the services of a :class:`~nyx_cli.compose._project.ComposeProject`
(``depends_on``; a cycle is an error) and :class:`ComposePlan` builds each container's request:
its networks (aliases, links, ``network_mode: service:``), volumes, the DNS stack nyxd
computes its policy from, labels and the config hash ``compose up`` compares.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nyx_core import StackNetwork

from ..daemon._models import ContainerSpec, NetworkAttachment, StackService
from ._netkeys import net_keys
from ._project import (
    CONFIG_HASH_LABEL,
    PROJECT_LABEL,
    SERVICE_LABEL,
    ComposeNetwork,
    ComposeProject,
    topological,
)
from ._service_runtime import ComposeVolume

__all__ = ["ComposePlan", "plan_stack"]


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@dataclass(frozen=True)
class ComposePlan:
    """What ``nyx compose up`` asks nyxd for, in order.

    ``read_file`` reads what ``env_file``, secrets and configs name, when a container's
    request is built (the only I/O of the plan).
    """

    project: ComposeProject
    order: tuple[str, ...]
    read_file: Callable[[str], bytes] = _read_file

    @property
    def name(self) -> str:
        return self.project.name

    def networks(self) -> list[ComposeNetwork]:
        """Networks to create: those at least one service joins, in file order."""
        used = {sn.key for s in self.project.services.values() for sn in s.networks}
        return [n for k, n in self.project.networks.items() if k in used]

    def container_name(self, service: str) -> str:
        svc = self.project.services.get(service)
        if svc is not None and svc.net.container_name:
            return svc.net.container_name
        return f"{self.project.name}-{service}-1"

    def network_mode(self, service: str) -> str | None:
        """nyxd's ``network_mode`` for the service (``service:NAME`` → that container)."""
        mode = self.project.services[service].net.network_mode
        owner = self.project.services[service].net.service_of
        if owner is not None:
            return f"container:{self.container_name(owner)}"
        return None if mode == "bridge" else mode

    def joiners(self, service: str) -> list[str]:
        """Services in ``service``'s network namespace (``network_mode: service:``),
        directly or through another, in stop order."""
        out: list[str] = []
        for name in self.stop_order():
            owner = self.project.services[name].net.service_of
            while owner is not None and owner != service:
                owner = self.project.services[owner].net.service_of
            if owner == service:
                out.append(name)
        return out

    def link_aliases(self, service: str, network: str) -> list[str]:
        """``links: [SERVICE:ALIAS]`` of the services sharing ``network`` with ``service``:
        extra names of ``service`` there (links are aliases)."""
        out = []
        for other in self.project.services.values():
            if network not in net_keys(other):
                continue
            out += [alias for target, alias in other.net.links if target == service]
        return out

    def volumes(self) -> list[ComposeVolume]:
        """Volumes at least one service mounts, in file order (external ones included)."""
        used = {
            m.source
            for s in self.project.services.values()
            for m in s.runtime.mounts
            if m.type == "volume"
        }
        return [v for v in self.project.volumes.values() if v.name in used]

    def attachments(self, service: str) -> list[NetworkAttachment]:
        """The service's networks as nyxd sees them; aliases start with the service name.

        File order, except that a service publishing ports gets a non-internal network
        first (nyxd publishes ports on the first one).
        """
        svc = self.project.services[service]
        nets = list(svc.networks)
        if svc.ports:
            # nyxd publishes ports on the first network: make it one that is not internal
            nets.sort(key=lambda sn: self.project.networks[sn.key].internal)
        out: list[NetworkAttachment] = []
        for i, sn in enumerate(nets):
            net = self.project.networks[sn.key]
            names = [*sn.aliases, *self.link_aliases(service, sn.key)]
            aliases = [service, *dict.fromkeys(a for a in names if a != service)]
            mac = sn.mac_address or (svc.net.mac_address if i == 0 else None)
            out.append(
                NetworkAttachment(
                    name=net.name,
                    aliases=aliases,
                    internal=net.internal,
                    ipv4_address=sn.ipv4_address,
                    ipv6_address=sn.ipv6_address,
                    mac_address=mac,
                )
            )
        return out

    def stack_services(self) -> dict[str, StackService]:
        """Every service on a network of its own, with its networks: nyxd computes the DNS
        policy from this (``network_mode: bridge`` is nyxd's default network)."""
        out = {}
        for s, svc in self.project.services.items():
            if svc.net.network_mode == "bridge":
                out[s] = StackService(networks=[NetworkAttachment()])
            elif svc.net.network_mode is None:
                out[s] = StackService(networks=self.attachments(s))
        return out

    def dns_stack(self) -> dict[str, list[StackNetwork]]:
        """The same, in the shape :func:`nyx_core.dns_policy` takes."""
        return {
            s: [StackNetwork(a.name, a.internal) for a in st.networks]
            for s, st in self.stack_services().items()
        }

    def container_spec(self, service: str) -> ContainerSpec:
        """The request for one service, labelled with project, service and config hash."""
        svc = self.project.services[service]
        labels = {**svc.runtime.labels, PROJECT_LABEL: self.project.name, SERVICE_LABEL: service}
        environ = self.project.environ
        extra = svc.runtime.spec_fields(
            self.read_file, environ, self.project.secrets, self.project.configs
        )
        mode = self.network_mode(service)
        bridge = svc.net.network_mode == "bridge"
        spec = ContainerSpec(
            image=svc.image,
            name=self.container_name(service),
            hostname=None if svc.net.shares_names else svc.hostname,
            command=list(svc.command) if svc.command is not None else None,
            entrypoint=list(svc.entrypoint) if svc.entrypoint is not None else None,
            env={**svc.runtime.environment(self.read_file, environ), **svc.environment},
            ports=list(svc.ports),
            networks=self.attachments(service),
            stack=self.project.name,
            stack_services=self.stack_services(),
            labels=labels,
            network_mode=mode,
            mac_address=svc.net.mac_address if bridge else None,
            aliases=[service] if bridge else [],
            **svc.net.spec_fields(),
            **extra,
            restart=svc.restart_policy,
            healthcheck=svc.healthcheck,
        )
        digest = hashlib.sha256(
            json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()
        ).hexdigest()
        spec.labels[CONFIG_HASH_LABEL] = digest[:16]
        return spec

    def container_specs(self) -> list[ContainerSpec]:
        """One spec per service, in start order."""
        return [self.container_spec(s) for s in self.order]

    def create_request(self, service: str) -> dict[str, Any]:
        """The ``POST /v1/containers`` body: the spec's JSON plus ``"start": true``."""
        body: dict[str, Any] = self.container_spec(service).model_dump(
            mode="json", exclude_none=True
        )
        body["start"] = True
        return body

    def stop_order(self) -> tuple[str, ...]:
        return tuple(reversed(self.order))


def plan_stack(
    project: ComposeProject, read_file: Callable[[str], bytes] = _read_file
) -> ComposePlan:
    """Order the services so each starts after what it ``depends_on``; a cycle is an error."""
    return ComposePlan(project=project, order=topological(project.services), read_file=read_file)
