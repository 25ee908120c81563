"""The hash stage: the three cache keys and the hit-or-miss decision, made before any training
(entry point: keys.make_hash_stage)."""
