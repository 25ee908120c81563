"""The soak run: signed deliveries against the real service while processes are killed."""
