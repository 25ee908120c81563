"""The container builder: the repository's Dockerfile built by docker or podman, pushed to an
OCI registry and recorded by digest."""
