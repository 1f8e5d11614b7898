"""The AWS adapters: the only code that imports boto3 or botocore. Each owns its store's layout."""
