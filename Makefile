.PHONY: setup up down status demo test lint bench
setup:  ## install everything this machine lacks (idempotent)
	./scripts/setup.sh
up: setup
	uv run driftloop up
down:
	uv run driftloop down
status:
	uv run driftloop status
demo: setup
	uv run driftloop demo
test: setup
	./scripts/test.sh
lint:
	uv run ruff check . && uv run ruff format --check .
