# make lease-cost (issue 11): a real fleet on kinesalite + dynalite (4 worker processes,
# 32 shards, a producer at 200 records/s) with its DynamoDB traffic counted per table and
# operation; balance, 60 s steady, SIGKILL fail-over, SIGTERM hand-over and a new worker's
# share timed; every record checked. Figures printed beside the KCL 2.x model, never asserted
# (exit 1 only when records are missing). Bounded: <= 5 min (about 2 here).
.PHONY: lease-cost
lease-cost: $(STAMP) emulators
	timeout 300 $(PY) -m tests.leasecost --workers 4 --shards 32 --rate 200 --steady-s 60
