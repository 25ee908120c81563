# The two commands for a fresh machine: `make run` and `make test`.
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run sandbox test install uv lint format bench mutate clean

uv:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv

# --compile-bytecode: the sandbox mounts this venv read-only, so a test stage (test_env
# "worker") or a trainer process can never write the bytecode it imports; compiled once here,
# importing scikit-learn, starlette and pytest took 3.3 s against 6.8 s from source.
install: uv
	$(UV) sync --frozen --all-extras --compile-bytecode

## make run: install, migrate and start the all-in-one service with the bundled example
run: install sandbox
	$(UV) run trainhook up --demo --host $(HOST) --port $(PORT)

# The example's tests run in the bubblewrap sandbox: without it the test stage refuses.
sandbox:
	@command -v bwrap >/dev/null 2>&1 || { [ "$$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && echo "installing bubblewrap (the sandbox repository code runs in)" \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  --no-install-recommends bubblewrap util-linux >/dev/null; } \
	  || echo "make run: install bubblewrap, or the demo's test stage refuses to run" >&2

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
