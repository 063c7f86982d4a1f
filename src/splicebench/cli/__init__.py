"""The edge: what each invoke task does (commands) and the lab/hosts task collections."""
