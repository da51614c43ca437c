# The two commands: `make run` and `make test`. Everything else is a step they take.
#
# uv is called through deploy/uv.sh, which installs uv from PyPI when this
# machine has none. The lock file is used frozen: setup never re-resolves.

UV := deploy/uv.sh

.PHONY: setup run test bench chaos clean

setup:
	@echo "setup: syncing the virtualenv (.venv) from uv.lock"
	@$(UV) sync --frozen
	@echo "setup: done"

run: setup
	@$(UV) run --frozen python deploy/devstack.py

# pytest's exit code is make's: 5 ("no tests collected") fails like any other.
# Test files run on TEST_WORKERS processes (pytest-xdist, a file per worker at
# a time, so a module's stack is started once): most end-to-end time is audio
# played at real-time pace, not CPU. TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= 2
test: setup
	@sh deploy/system-deps.sh
	@$(UV) run --frozen pytest -n $(TEST_WORKERS) --dist loadfile

bench: setup
	@$(UV) run --frozen python bench/run.py

# Minutes of calls on two processes of every worker service, killed with
# SIGKILL at random (tests/chaos.py); then the same on two "hosts" (network
# namespaces, needs root) with one host killed whole (tests/two_hosts.py).
# Prints the figures for docs/BENCHMARKS.md.
chaos: setup
	@$(UV) run --frozen python tests/chaos.py --minutes $${CHAOS_MINUTES:-4}
	@$(UV) run --frozen python tests/two_hosts.py

clean:
	rm -rf var .venv
