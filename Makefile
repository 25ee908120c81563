# The two commands for a fresh machine: `make run` and `make test`.
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test install uv lint format bench mutate clean

uv:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv

install: uv
	$(UV) sync --frozen --all-extras

## make run: install, migrate and start the all-in-one service with the bundled example
run: install
	$(UV) run trainhook up --demo --host $(HOST) --port $(PORT)

## make test: install (system packages too, when root) and run the whole suite
test: install
	bash scripts/system-deps.sh
	$(UV) run pytest

lint: install
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy

format: install
	$(UV) run ruff check --fix .
	$(UV) run ruff format .

bench: install
	$(UV) run python bench/ingest/run.py
	$(UV) run python bench/train/run.py

## make mutate: mutation testing of the core modules (mutmut, niced; MUTATION.md): slow
mutate: install
	$(UV) run python scripts/mutate.py

clean:
	rm -rf .trainhook .pytest_cache .mypy_cache .ruff_cache mutants
