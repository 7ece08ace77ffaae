"""Every key of the Compose Specification, and what nyx does with those it does not run.

Nothing is silently ignored that would change what runs: a key nyx implements is read by
:mod:`._project` (its ``_*_KEYS`` sets); a purely informational one it does not implement is
a warning (:data:`INFORMATIONAL`); every other key, a Compose key nyx does not implement or
a key Compose does not know, is an error naming its path (:data:`REFUSED` says why for the
common ones). docs/compose.md has the same table, kept true by a test
(tests/nyx_cli/unit/test_compose_keys.py).

The key lists are those of the Compose Specification's JSON schema
(``compose-spec/compose-spec``, ``schema/compose-spec.json``).
"""

from __future__ import annotations

__all__ = ["INFORMATIONAL", "REFUSED", "SCOPES", "SPEC_KEYS"]

SCOPES = ("top", "service", "service_network", "network", "ipam", "ipam_config")
"""Where a key sits: the top level, ``services.<s>``, ``services.<s>.networks.<n>``,
``networks.<n>``, ``networks.<n>.ipam``, ``networks.<n>.ipam.config[i]``."""


def _keys(text: str) -> frozenset[str]:
    return frozenset(text.split())


SPEC_KEYS: dict[str, frozenset[str]] = {
    "top": _keys("version name include services networks volumes secrets configs models"),
    "service": _keys(
        """annotations attach blkio_config build cap_add cap_drop cgroup cgroup_parent command
        configs container_name cpu_count cpu_percent cpu_period cpu_quota cpu_rt_period
        cpu_rt_runtime cpu_shares cpus cpuset credential_spec depends_on deploy develop
        device_cgroup_rules devices dns dns_opt dns_search domainname entrypoint env_file
        environment expose extends external_links extra_hosts gpus group_add healthcheck
        hostname image init ipc isolation label_file labels links logging mac_address
        mem_limit mem_reservation mem_swappiness memswap_limit models network_mode networks
        oom_kill_disable oom_score_adj pid pids_limit platform ports post_start pre_stop
        privileged profiles provider pull_policy pull_refresh_after read_only restart runtime
        scale secrets security_opt shm_size stdin_open stop_grace_period stop_signal
        storage_opt sysctls tmpfs tty ulimits use_api_socket user userns_mode uts volumes
        volumes_from working_dir"""
    ),
    "service_network": _keys(
        """aliases interface_name ipv4_address ipv6_address link_local_ips mac_address
        driver_opts priority gw_priority"""
    ),
    "network": _keys(
        """name driver driver_opts ipam external internal enable_ipv4 enable_ipv6 attachable
        labels"""
    ),
    "ipam": _keys("driver config options"),
    "ipam_config": _keys("subnet ip_range gateway aux_addresses"),
}
"""Every key of the Compose Specification, per scope."""

INFORMATIONAL: dict[str, dict[str, str]] = {
    "top": {"version": "obsolete"},
    "service": {
        "annotations": "OCI annotations are metadata nyx does not record",
        "attach": "which logs `up` follows: nyx follows every service's",
        "develop": "development-time settings (compose watch)",
        "logging": "nyxd keeps every container's output itself",
    },
    "network": {"attachable": "swarm only: any container may join a nyx network"},
}
"""Keys nyx does not implement that change nothing that runs: warnings naming the path."""

_BUILD = (
    "nyx does not build images: build it elsewhere (docker build -t NAME DIR, buildah), "
    "`nyx load` it (docker save NAME | nyx load) and name it in `image:` instead of `build:`"
)
_ONE_HOST = "nyx runs one container per service on one host"

REFUSED: dict[str, dict[str, str]] = {
    "top": {
        "include": "only one compose file is read",
        "models": "AI models are not supported",
    },
    "service": {
        "build": _BUILD,
        "deploy": _ONE_HOST + " without resource limits",
        "scale": _ONE_HOST,
        "profiles": "profiles are not supported: every service of the file runs",
        "extends": "extends is not supported: write the service in full",
        "external_links": "external_links are not supported: use a shared network",
        "volumes_from": "volumes_from is not supported: mount the same named volumes",
        "platform": "nyx runs the image it has; pull the platform you need",
        "pull_policy": "compose up never pulls: images must be present (nyx load, nyx pull)",
        "privileged": "privileged containers are not supported",
    },
    "service_network": {
        "link_local_ips": "link-local addresses are not supported",
        "driver_opts": "per-attachment driver options are not supported",
        "priority": "nyx attaches networks in file order (ports on the first)",
        "gw_priority": "the default route goes through the first network",
        "interface_name": "interfaces are named eth0, eth1... in attachment order",
    },
    "network": {
        "enable_ipv4": "every nyx network has IPv4 (true is the default and accepted)",
    },
    "ipam": {"options": "IPAM driver options are not supported"},
    "ipam_config": {
        "ip_range": "nyx hands out the whole subnet",
        "aux_addresses": "reserved addresses are not supported",
    },
}
"""Why the common unimplemented keys are refused (any other is refused too)."""
