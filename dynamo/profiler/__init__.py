"""Deploy by intent: a DynamoGraphDeploymentRequest (model, SLA, hardware) → profiling → a DGD."""
