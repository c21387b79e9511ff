"""WorkflowSchedules: which runs to start when (`plan`), and the controller that does it."""
