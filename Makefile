# The two set-up commands of the README: `make demo` and `make test`.
PYTHON ?= python3
export PYTHON

.PHONY: deps demo test

deps:
	./scripts/install-deps.sh

demo: deps
	policyc validate examples/shop/policies
	policyc matrix examples/shop/policies --inventory examples/shop/inventory.yaml --ports 80/TCP,443/TCP,5432/TCP

test: deps
	$(PYTHON) -m pytest -q -p no:cacheprovider tests
