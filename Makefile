# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test bench clean browser server-extension labextension services cgroup2-vm

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# The stamp is rebuilt when pyproject.toml changes, so a new dependency is picked up without `make clean`.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

# The same notebook under a 1 GiB limit: stock Jupyter (OOM-killed) next to `kernel-sentinel run`.
demo: $(VENV)/.installed
	$(BIN)/kernel-sentinel budget
	$(BIN)/python examples/demo.py

# The HTML report's test opens the page in a real headless browser. Installed once (CI runs as root on a
# fresh Debian); where it cannot be installed the test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
		|| echo "chromium could not be installed: the HTML report's browser test will be skipped"

# The JupyterLab 4 / Notebook 7 extension (labextension/, TypeScript): npm installs the locked packages, tsc and
# the JupyterLab builder (against the JupyterLab installed in the venv) build it, and it is copied where Lab finds
# prebuilt extensions (the wheel ships the same files). Node.js and npm come from apt where they are missing (CI
# runs as root on a fresh Debian).
LAB_EXT := $(VENV)/share/jupyter/labextensions/kernel-sentinel
LAB_SOURCES := labextension/package.json labextension/package-lock.json labextension/tsconfig.json \
	$(wildcard labextension/src/*.ts labextension/style/*)

labextension: $(LAB_EXT)/package.json

labextension/node_modules/.package-lock.json: labextension/package.json labextension/package-lock.json
	@command -v npm >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm)
	cd labextension && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The build runs @jupyterlab/builder's own script (what `jupyter labextension build` runs): the jupyter_builder
# wrapper insists on Node >= 20.19 even for this webpack build, and Debian 12 ships Node 18.
$(LAB_EXT)/package.json: $(LAB_SOURCES) labextension/node_modules/.package-lock.json | $(VENV)/.installed
	cd labextension && npx tsc
	cd labextension && node node_modules/@jupyterlab/builder/lib/build-labextension.js \
		--core-path "$$($(abspath $(BIN))/python -c 'import jupyterlab, os; print(os.path.join(os.path.dirname(jupyterlab.__file__), "staging"))')" .
	rm -rf $(LAB_EXT) && mkdir -p $(dir $(LAB_EXT)) && cp -r labextension/build/labextension $(LAB_EXT)

# The server extension is enabled by a jupyter_server_config.d file the wheel installs into
# <prefix>/etc/jupyter; an editable install (`pip install -e`) skips data files, so put the same file there.
server-extension: $(VENV)/.installed
	install -D -m 644 jupyter-config/jupyter_server_config.d/kernel_sentinel.json \
		$(VENV)/etc/jupyter/jupyter_server_config.d/kernel_sentinel.json

# The fleet's tests start their own PostgreSQL, Prometheus and JupyterHub (whose proxy, configurable-http-proxy,
# comes from npm into .services/, put on PATH by the hub test). Installed once where missing (CI runs as root
# on a fresh Debian); where one cannot be installed its tests skip and say why.
CHP := .services/node_modules/.bin/configurable-http-proxy

services: $(CHP)
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq postgresql) || echo "postgresql could not be installed: the shared-store tests will be skipped"
	@command -v prometheus >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq prometheus) || echo "prometheus could not be installed: the hub's metrics test will be skipped"

$(CHP):
	@command -v npm >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm)
	mkdir -p .services && npm install --prefix .services --no-audit --no-fund --loglevel=error configurable-http-proxy@4 \
		|| echo "configurable-http-proxy could not be installed: the JupyterHub test will be skipped"

# The per-kernel memory group's cgroup v2 and systemd-scope paths run in a throw-away qemu VM booting Debian's
# kernel (this machine's memory controller is bound to cgroup v1): qemu, a kernel image and a static busybox,
# installed once where missing; where they cannot be, those tests skip and say why.
cgroup2-vm:
	@(command -v qemu-system-x86_64 >/dev/null 2>&1 && ls /boot/vmlinuz-* >/dev/null 2>&1 && dpkg -s busybox-static >/dev/null 2>&1) \
		|| (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			qemu-system-x86 linux-image-amd64 busybox-static) \
		|| echo "qemu or a kernel image could not be installed: the cgroup v2 VM tests will be skipped"

test: $(VENV)/.installed browser labextension server-extension services cgroup2-vm
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(BIN)/python bench/bench_memory_read.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
