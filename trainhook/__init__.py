"""trainhook."""
