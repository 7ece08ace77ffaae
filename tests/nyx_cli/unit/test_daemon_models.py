"""The daemon's request models (ContainerSpec, NetworkAttachment)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from nyx_cli.daemon._models import ContainerSpec, NetworkAttachment
from nyx_core import PortMapping


def test_container_spec_default_attachment_and_validation() -> None:
    spec = ContainerSpec(image="busybox", ports=["8080:80"], internal=True)  # type: ignore[list-item]
    assert spec.ports == [PortMapping.parse("8080:80")]
    assert spec.attachments() == [NetworkAttachment(name="nyx", internal=True)]
    with pytest.raises(ValidationError, match="hostname"):
        ContainerSpec(image="busybox", hostname="-bad-")
    with pytest.raises(ValidationError, match="image"):
        ContainerSpec(image="")
    with pytest.raises(ValidationError, match="bogus"):
        ContainerSpec.model_validate({"image": "x", "bogus": 1})
