# Two commands do all the set-up (see README.md): `make serve` and `make test`.
.PHONY: setup serve test lint constraints wheel

setup:
	./scripts/setup.sh

serve: setup
	.venv/bin/sswe-node serve

test: setup
	.venv/bin/python -m pytest -q

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

# After changing dependencies in pyproject.toml: pin what .venv holds (see scripts/constraints.py).
constraints: setup
	.venv/bin/python scripts/constraints.py

# A wheel of the node and toolkit, with the default configuration and shipped models inside.
wheel: setup
	.venv/bin/python -m pip wheel --no-deps --no-build-isolation -w dist .
