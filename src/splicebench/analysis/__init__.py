"""Numbers: statistics, summaries, CIs, ratios, run-vs-run comparisons (pure: pandas, scipy)."""
