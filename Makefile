# Two commands do all the set-up (see README.md): `make serve` and `make test`.
.PHONY: setup serve test lint

setup:
	./scripts/setup.sh

serve: setup
	.venv/bin/sswe-node serve

test: setup
	.venv/bin/python -m pytest -q

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check .
