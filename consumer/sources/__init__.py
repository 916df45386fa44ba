"""Sources other than Kinesis polling: SQS."""
