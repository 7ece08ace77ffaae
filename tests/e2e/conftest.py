"""Fixtures of the nyxd e2e tests (the kit lives in ``nyxd_e2e_kit``)."""

from __future__ import annotations

from nyxd_e2e_kit import busybox_tar, external_ns, internet_ns, nyxd, nyxd_factory

__all__ = ["busybox_tar", "external_ns", "internet_ns", "nyxd", "nyxd_factory"]
