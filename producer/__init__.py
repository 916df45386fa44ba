"""telemax producer: generates realistic records and tails log files into Kinesis."""
