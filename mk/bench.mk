# make bench: the worker beside a Lambda-style baseline and the backend's ceiling, same run
# (kinesalite + dynalite, 100,000 readings, 3 repeats, medians). Bounded: <= 5 min.
.PHONY: bench
bench: $(STAMP) emulators
	timeout 300 $(PY) -m tests.bench --records 100000 --repeats 3
