# make soak: faults on >= 10 % of requests, >= 1 % bad records, a worker killed halfway;
# ends with the ledger (produced = stored + dead-lettered, missing = 0). Bounded: <= 3 min.
.PHONY: soak
soak: $(STAMP) emulators
	timeout 180 $(PY) -m tests.soak --seconds 90
