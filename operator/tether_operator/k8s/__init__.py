"""Tether on Kubernetes: the custom resources (`resources`) and their CRDs (`crdgen`).

This layer sits above the scheduler; the engine, the scheduler and the SDK never
import it (an import-linter contract in pyproject keeps it so).
"""
