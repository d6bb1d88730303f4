"""NVIDIA Dynamo's Global Router (`python -m dynamo.global_router`): one frontend's requests spread over
pools of workers in other namespaces, each behind its own local router, by the request's SLA targets,
length and priority."""
