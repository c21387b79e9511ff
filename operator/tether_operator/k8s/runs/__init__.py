"""WorkflowRuns and Workflows: starting runs, writing their status, runs asked for over HTTP."""
