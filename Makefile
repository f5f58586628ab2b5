# The two commands of the README:
#   make demo   — local cluster + svcscope + sample workloads, port-forwarded to http://localhost:8080
#   make test   — installs everything a fresh machine lacks, then lint, type checks, unit and e2e tests
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: test bootstrap install lint unit e2e e2e-multinode e2e-scale e2e-nftables faults cluster-up cluster-down demo demo-down

$(VPY): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[dev]'
	touch $(VPY)

bootstrap: $(VPY)

# Debian packages and the Kubernetes binaries (built from Go modules, cached by version).
install: bootstrap
	$(VPY) -m devcluster install

lint: bootstrap
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# Unit tests include the chart's golden tests, which need the helm binary that `install` builds.
unit: install
	$(VENV)/bin/pytest -m "not e2e" -q

# The e2e session fixture brings the cluster up (or reuses a healthy one); the down/up lifecycle test runs last.
e2e: install
	$(VPY) -m devcluster image build
	$(VENV)/bin/pytest -m "e2e and not multinode and not faults" -q tests/e2e

# Topology routing on a separate instance ("mn": 3 nodes in 2 zones, beside the single-node cluster), with
# kube-proxy in iptables mode, then in nftables mode (each pass rebuilds the instance in its mode).
# The 250-endpoint test (marker scale) runs once, in the iptables pass: the instance is in that mode then.
e2e-multinode: install
	$(VPY) -m devcluster image build
	$(VENV)/bin/pytest -m multinode -q tests/e2e
	SVCSCOPE_E2E_PROXY_MODE=nftables $(VENV)/bin/pytest -m "multinode and not scale" -q tests/e2e

# A Service with 250 endpoints (three EndpointSlices) over the multi-node instance, alone. ~6 min.
e2e-scale: install
	$(VPY) -m devcluster image build
	$(VENV)/bin/pytest -m scale -q tests/e2e

# kube-proxy in nftables mode on a single-node instance of its own ("nft"): the devcluster tests, and of the
# dashboard's tests those where the mode matters — new connections spread, ClientIP pins one pod (per-endpoint
# timeout sets in nftables), and flipping affinity from the page. ~2 min; ~7 min if the image is still to build.
NFT_PROBE_TESTS := tests/e2e/test_probe.py::test_new_connections_spread_uniformly \
	tests/e2e/test_probe.py::test_client_ip_affinity_one_pod tests/e2e/test_affinity_toggle.py
e2e-nftables: install
	$(VPY) -m devcluster image build
	SVCSCOPE_DC_INSTANCE=nft SVCSCOPE_E2E_PROXY_MODE=nftables $(VENV)/bin/pytest -m "e2e and not multinode" \
		-q tests/e2e/test_devcluster.py tests/e2e/test_devcluster_lifecycle.py $(NFT_PROBE_TESTS)
	SVCSCOPE_DC_INSTANCE=nft $(VPY) -m devcluster down

# Fault injection (apiserver, etcd, kube-proxy, CoreDNS): its own step, since it disturbs the whole node.
faults: install
	$(VPY) -m devcluster image build
	$(VENV)/bin/pytest -m faults -q tests/e2e

test: lint unit e2e e2e-multinode e2e-nftables faults

cluster-up: install
	$(VPY) -m devcluster up

cluster-down: bootstrap
	$(VPY) -m devcluster down

# The local demo: cluster up, image built and imported, chart installed with the sample workloads,
# `kubectl port-forward svc/svcscope 8080:80` in the background, started again whenever it dies (the
# kubectl plugin's supervisor; pid and log in .demo/). Idempotent.
# Its cluster is an instance of its own ("demo", 3 nodes in 3 zones): `make test` takes the default instance
# down and up again and keeps it at one node, which must neither stop the demo nor reshape the tests' cluster.
# SVCSCOPE_DC_INSTANCE= (empty) puts the demo on the default instance instead.
demo demo-down: export SVCSCOPE_DC_INSTANCE ?= demo
demo: install
	$(VPY) -m scripts.demo up

# Stops the port-forward's supervisor and uninstalls the release; `make demo-down CLUSTER=1` stops the local cluster too.
demo-down: bootstrap
	$(VPY) -m scripts.demo down $(if $(CLUSTER),--cluster)
