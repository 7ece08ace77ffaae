"""Request bodies of the control-socket API, validated strictly.

Strict means JSON types are not coerced: ``"false"`` is not a boolean and ``"80"`` is not a
port, so a value is either what it says or a 400 that names the field and the value.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ImagePull", "NetworkCreate", "VolumeCreate"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NetworkCreate(_Body):
    """``POST /v1/networks``."""

    name: str = Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$", examples=["back"])
    internal: bool = Field(default=False, description="no route out of the network")
    subnet: str | None = Field(
        default=None,
        description="default: a free /24 of 10.89.0.0/16",
        examples=["10.89.7.0/24"],
    )
    gateway: str | None = Field(
        default=None,
        description="the gateway address (needs subnet); default: the subnet's first address",
        examples=["10.89.7.1"],
    )
    ipv6: bool = Field(
        default=False,
        description="dual stack: an IPv6 subnet too (subnet6, or a free /64 of "
        "fd6e:7978:1::/48); the net driver must declare the ipv6 capability",
    )
    subnet6: str | None = Field(
        default=None,
        description="the IPv6 subnet (/64 or larger; implies ipv6)",
        examples=["fd6e:7978:1:7::/64"],
    )
    gateway6: str | None = Field(
        default=None,
        description="the IPv6 gateway (needs subnet6); default: the subnet's first address",
        examples=["fd6e:7978:1:7::1"],
    )
    options: dict[str, str] = Field(
        default_factory=dict,
        description="driver options (nyx network create -o key=value, compose driver_opts); "
        "the driver refuses those it cannot honour",
        examples=[{"mtu": "1400"}],
    )
    labels: dict[str, str] = Field(default_factory=dict, examples=[{"team": "web"}])


class ImagePull(_Body):
    """``POST /v1/images/pull``."""

    reference: str = Field(min_length=1, examples=["alpine:3.19"])
    insecure: bool = Field(
        default=False,
        description="plain HTTP / unverified TLS: only for a registry nyxd itself was told is "
        "insecure (--insecure-registry)",
    )


class VolumeCreate(_Body):
    """``POST /v1/volumes``."""

    name: str | None = Field(
        default=None,
        pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$",
        description="default: a random 64-hex name",
        examples=["pgdata"],
    )
    driver: str = Field(default="local", description="only local is supported")
    options: dict[str, str] = Field(
        default_factory=dict, description="driver options: the local driver takes none"
    )
    labels: dict[str, str] = Field(default_factory=dict, examples=[{"team": "db"}])
