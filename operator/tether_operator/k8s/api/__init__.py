"""The Kubernetes API as Tether uses it: the one client that knows resource paths,
Events, and kopf's login."""
