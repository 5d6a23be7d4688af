.PHONY: setup up down status demo test lint
# setup may install uv with `pip install --user`; make its bin directory visible to later recipes
export PATH := $(HOME)/.local/bin:$(PATH)

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
	uv run ruff check . && uv run ruff format --check . && uv run mypy
