"""Reliability and security proof: faults, fuzzing, the state machine, the soak run."""
