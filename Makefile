# Quickstart entry points. Both install what they need first (scripts/bootstrap).
.PHONY: bootstrap demo test unit clean

bootstrap:
	./scripts/bootstrap

# Sandbox hosts up, bundle llm-chat, `inv deploy --host prod`, curl its health.
demo: bootstrap
	.venv/bin/inv demo

# The whole test suite: pure, fake-transport and end-to-end tiers.
test: bootstrap
	.venv/bin/inv test

# Only the tiers that need no Docker engine.
unit: bootstrap
	.venv/bin/inv test --unit

clean:
	-.venv/bin/inv sandbox.down
	rm -rf dist .cache
