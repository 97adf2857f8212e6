# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test bench clean browser

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

test: $(VENV)/.installed browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(BIN)/python bench/bench_memory_read.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
