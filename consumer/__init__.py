"""telemax consumer: KCL-style leased asyncio workers that drain Kinesis into DynamoDB."""

__version__ = "0.1.0"
