"""Run history kept in the cluster: ConfigMaps owned by the run, fenced, with large
payloads apart."""
