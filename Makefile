# nyx: developer entry points. Run as root on Debian 12 for the kernel tests and the demo.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DISTS := nyx_core nyx_plugins_native nyx_plugins_cni nyx_dns_embedded nyx_cli
EXAMPLES := examples/nyx-driver-loopback examples/nyx-dns-hosts
APT_PACKAGES := iproute2 nftables python3-nftables iptables containernetworking-plugins runc \
	busybox-static docker-registry skopeo bind9-dnsutils iputils-ping procps util-linux curl \
	openssl python3-venv tini
BENCH_PACKAGES := netavark aardvark-dns dnsmasq-base dnsperf podman

.PHONY: help deps venv test check lint type unit demo bench install-cni wheels clean
help:
	@echo "make deps      apt packages the tests and the demo need (root)"
	@echo "make test      lint, types and the whole test suite"
	@echo "make demo      nyxd with the defaults, a real container, a published port, a DNS lookup"
	@echo "make bench     benchmarks against netavark, CNI, aardvark-dns, dnsmasq, podman"
	@echo "make wheels    every distribution and its dependencies into ./wheelhouse (offline installs)"
	@echo "make install-cni  copy the distro's CNI plugins to /opt/cni/bin"

deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(BIN)/pytest: $(foreach d,$(DISTS) $(EXAMPLES),$(d)/pyproject.toml) requirements-dev.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(foreach d,$(DISTS),-e ./$(d)) $(foreach e,$(EXAMPLES),-e ./$(e)) -r requirements-dev.txt
	touch $@

venv: $(BIN)/pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check nyx_core nyx_cli

type: venv
	$(BIN)/mypy --strict nyx_core/src/nyx_core nyx_cli/src/nyx_cli nyx_plugins_cni/src/nyx_plugins_cni nyx_dns_embedded/src/nyx_dns_embedded nyx_plugins_native/src/nyx_plugins_native

check: lint type

test: deps venv check
	$(BIN)/pytest -q -p no:cacheprovider

unit: venv
	$(BIN)/pytest -q -m "not kernel and not e2e"

wheels: venv
	rm -rf wheelhouse && mkdir -p wheelhouse
	$(BIN)/pip wheel -q -w wheelhouse $(foreach d,$(DISTS),./$(d)) zstandard

install-cni:
	@dpkg -s containernetworking-plugins >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containernetworking-plugins; }
	mkdir -p /opt/cni/bin
	cp -n /usr/lib/cni/* /opt/cni/bin/
	@ls /opt/cni/bin

demo: deps venv
	bash examples/demo.sh

bench: deps venv
	@missing=$$(for p in $(BENCH_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) wheelhouse build dist .mypy_cache .ruff_cache .pytest_cache
