"""Deployment: DynamoGraphDeployment manifests validated, run locally, rendered for Kubernetes."""
