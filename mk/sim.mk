# make sim: the lease protocol at 1,000 shards and 50 workers on virtual time, telemax beside
# the KCL 2.x model (tests/sim), ten minutes of steady state; about 1.5 minutes on 2 cores.
# make sim-large: 10,000 shards and 200 workers, telemax only; about 3 minutes.
.PHONY: sim sim-large
sim: $(STAMP)
	timeout 600 $(PY) -m tests.sim --shards 1000 --workers 50 --steady 600

sim-large: $(STAMP)
	timeout 900 $(PY) -m tests.sim --shards 10000 --workers 200 --steady 120 --only telemax
