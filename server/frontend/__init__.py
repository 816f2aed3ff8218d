"""The gRPC frontend: the WorkflowService servicer and its error mapping."""
