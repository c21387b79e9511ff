"""WorkerPools: their pods, scaling, rollouts, health, and the nodes they run on."""
