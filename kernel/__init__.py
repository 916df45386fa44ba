"""What the consumer and the producer share and nothing else: the AWS edge, errors, options,
logging, backoff, the probes server, task ownership and the KPL codec. It imports neither."""
