"""The Cloud Build builder: one remote build runs build, push, deploy (GKE) and vertex."""
