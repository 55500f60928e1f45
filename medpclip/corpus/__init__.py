"""The corpus: sample records and keys (schema), frame → sample (sample), tar shards (shards), patient-level
splits (split), the Ray build (build) and read-back checks (inspect)."""
