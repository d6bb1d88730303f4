"""`python -m dynamo.global_planner`: one scaling authority for many graphs (Dynamo's GlobalPlanner)."""
