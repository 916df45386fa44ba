# make sim: the lease protocol at 1,000 shards and 50 workers on virtual time, telemax beside
# the KCL 2.x model (tests/sim). The steady state is measured over 120 s of simulated time
# (rates are stationary; --steady 600 for the ten minutes, about twice as long to run).
.PHONY: sim
sim: $(STAMP)
	timeout 900 $(PY) -m tests.sim --shards 1000 --workers 50 --steady 120
