"""The local builder: a container engine or a bundle, a registry, a release and its health check."""
