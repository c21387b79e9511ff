"""Tether on Kubernetes, in packages by job (an import-linter contract keeps each one
importing only those below it):

- `operator` (the composition root) and `context` (what each controller is handed);
- `runs`: WorkflowRuns and Workflows; `pools`: WorkerPools, their pods and nodes;
- `pool_health`: what the pool controller sees of each pool, for the runs waiting on it;
- `store`: run history in the cluster; `access`: auth, leader election and fencing;
- `api`: the client and the one place that knows resource paths, and Events;
- `resources`: the custom resources' models, their CRDs, naming and conditions.

This layer sits above the scheduler; the engine, the scheduler and the SDK never
import it.
"""
