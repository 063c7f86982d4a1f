"""Running a plan: hosts together, samples in order, nothing lost, no process left behind."""
