# The two set-up commands of the README: `make demo` and `make test`.
PYTHON ?= python3
export PYTHON

.PHONY: deps demo test

deps:
	./scripts/install-deps.sh

demo: deps
	policyc validate examples/shop/policies
	policyc matrix examples/shop/policies --inventory examples/shop/inventory.yaml --ports 443/TCP,8080/TCP,5432/TCP --external 203.0.113.7

test: deps
	$(PYTHON) -m pytest -q -p no:cacheprovider tests
