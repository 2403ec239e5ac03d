"""The compiled, versioned pipeline spec: models, compilation from the SDK, and validation."""
